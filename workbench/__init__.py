"""workbench: which soft-prompt initialisation makes few-shot prompt tuning of a frozen language model work.

The package is the engine; the notebooks and the ``python -m workbench`` command line are its clients.
Initialisations register themselves in :data:`workbench.inits.INITS` when their modules are imported below
(the one place where registration happens).
"""
__version__ = "0.1.0"

from . import inits  # noqa: E402,F401  registers random, vocab, text, labels, file
from .config import BackboneConfig, FewShotConfig, PromptConfig, TaskConfig, TuneConfig  # noqa: E402,F401
from .inits import list_inits, register_init  # noqa: E402,F401
from . import metatrain  # noqa: E402,F401  registers metapt, mpt-maml, mpt-fomaml, mpt-reptile, multitask
from . import supmer  # noqa: E402,F401  registers the selfsup source, the supmer learner, inits supmer, supmer+psi
from . import bayes  # noqa: E402,F401  registers the bayes init (BayesPrompt: GMM + SVGD particles)
