"""Task sources for meta-training: the :class:`~workbench.tasks.episodes.Episode` type and the source registry,
corpus clustering, MetaPT pseudo-tasks, MPT labelled sources, SUPMER's self-supervised tasks. Imports only ``engine``."""
