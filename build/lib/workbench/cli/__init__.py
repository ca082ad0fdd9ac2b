"""The ``workbench`` command line (also ``python -m workbench``): one module per subcommand group."""
from workbench.cli.main import build_parser, main  # noqa: F401
