"""Method-specific parts plugged into ``learn``: SUPMER (ψ, curriculum mixup, its learner and inits) and BayesPrompt
(GMM + SVGD prompt distributions); :mod:`~workbench.methods.catalog` registers everything the workbench ships."""
