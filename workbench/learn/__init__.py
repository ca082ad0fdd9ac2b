"""Learning on the prompt tensor: the tuning loop (and a learning-rate grid tuned in one pass), the init registry,
meta-learners, the meta-training loop and the cached factory for meta-learned inits. Imports ``tasks`` and
``engine``."""
