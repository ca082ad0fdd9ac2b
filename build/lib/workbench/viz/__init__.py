"""Plotly figures (hover on every point) from run directories and from the engine's objects; no training here."""
