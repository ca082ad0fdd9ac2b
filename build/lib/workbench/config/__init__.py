"""Configuration: dataclasses with help metadata (:mod:`~workbench.config.sections`) and the machinery that
serialises, overrides and migrates them (:mod:`~workbench.config.base`). Sits beside the layers; imports none."""
from workbench.config.base import (  # noqa: F401
                                   DEFAULT_SEEDS,
                                   RENAMED,
                                   ConfigError,
                                   apply_overrides,
                                   choice,
                                   from_dict,
                                   knob,
                                   migrate,
                                   section,
                                   to_dict,
                                   to_json,
)
from workbench.config.commands import BayesReportConfig, ClusterConfig, DomainGenConfig, ExploreConfig, SimilarityConfig  # noqa: F401,E402
from workbench.config.sections import (  # noqa: F401
                                   LETTERS,
                                   TASK_TYPES,
                                   BackboneConfig,
                                   BayesConfig,
                                   FewShotConfig,
                                   LabelledConfig,
                                   MetaConfig,
                                   MetaTrainConfig,
                                   PromptConfig,
                                   PseudoConfig,
                                   SelfSupConfig,
                                   SupmerConfig,
                                   TaskConfig,
                                   TuneConfig,
                                   check_choices,
                                   check_positive,
)
