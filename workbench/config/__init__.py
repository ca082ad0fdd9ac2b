"""Configuration: dataclasses with help metadata (:mod:`~workbench.config.sections`, its meta-learning sections in
:mod:`~workbench.config.meta`, and the configs of the smaller commands in :mod:`~workbench.config.commands`) and the machinery that serialises, overrides and migrates them
(:mod:`~workbench.config.base`). Sits beside the layers and imports none of them."""
from workbench.config.base import (  # noqa: F401
                                   DEFAULT_SEEDS,
                                   RENAMED,
                                   ConfigError,
                                   WorkbenchError,
                                   apply_overrides,
                                   check_choices,
                                   check_positive,
                                   choice,
                                   from_dict,
                                   knob,
                                   migrate,
                                   section,
                                   to_dict,
                                   to_json,
)
from workbench.config.commands import BayesReportConfig, ClusterConfig, DomainGenConfig, ExploreConfig, SimilarityConfig  # noqa: F401
from workbench.config.meta import (  # noqa: F401
                                   CHOICE_TYPES,
                                   LETTERS,
                                   TASK_TYPES,
                                   LabelledConfig,
                                   MetaConfig,
                                   PseudoConfig,
                                   SelfSupConfig,
                                   SupmerConfig,
)
from workbench.config.sections import (  # noqa: F401
                                   BackboneConfig,
                                   BayesConfig,
                                   FewShotConfig,
                                   MetaTrainConfig,
                                   PromptConfig,
                                   TaskConfig,
                                   TuneConfig,
)
