"""The ground layer: data, splits, frozen backbones, templates, prompt splicing, heads, run directories, statistics.

Imports nothing above it (only :mod:`workbench.config`)."""
