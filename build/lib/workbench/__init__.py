"""workbench: which soft-prompt initialisation makes few-shot prompt tuning of a frozen language model work.

The package is the engine; the notebooks and the ``workbench`` command line are its clients. Layers, bottom to top
(each imports only those below it): :mod:`workbench.config` · ``engine`` · ``tasks`` · ``learn`` · ``methods`` ·
``experiments`` · ``viz`` · ``ui`` · ``cli``. Every shipped init, meta-learner and task source is registered in one
place, :func:`workbench.methods.catalog.register_all`, called here.
"""
from workbench._version import __version__  # noqa: F401
from workbench.config import (  # noqa: F401
    BackboneConfig,
    FewShotConfig,
    PromptConfig,
    TaskConfig,
    TuneConfig,
)
from workbench.learn.inits import list_inits, register_init  # noqa: F401
from workbench.methods.catalog import register_all

register_all()
