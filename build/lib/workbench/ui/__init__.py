"""ipywidgets panels for the notebooks; thin wrappers over ``experiments`` and ``viz``."""
