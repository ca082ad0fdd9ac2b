"""The one registration site: every init, meta-learner and task source the workbench ships.

The registries themselves live in the layers that use them (:data:`workbench.learn.inits.INITS`,
:data:`workbench.learn.meta.LEARNERS`, :data:`workbench.tasks.episodes.SOURCES`); nothing registers itself as a side
effect of being imported. :func:`register_all` fills them, once; ``import workbench`` calls it. Third-party code adds
its own entries with the same ``register_*`` functions after that.
"""
from __future__ import annotations

from workbench.learn import inits, meta
from workbench.learn.inits import register_init
from workbench.learn.meta import register_learner
from workbench.learn.meta_inits import meta_init, task_names_init
from workbench.methods import bayes, supmer
from workbench.tasks import labelled, pseudo, selfsup
from workbench.tasks.episodes import register_source

_done = False

INITS = [  # (name, factory, description, downstream grad hook)
    ("random", inits.random_init, "normal noise with the embedding table's standard deviation", None),
    ("vocab", inits.vocab_init, "embeddings of tokens sampled from the most frequent vocabulary (prompt.vocab_top)",
     None),
    ("text", inits.text_init, "token embeddings of prompt.init_text, repeated or truncated to the prompt length", None),
    ("labels", inits.labels_init, "token embeddings of the label words, cycled to the prompt length", None),
    ("file", inits.file_init, "a saved prompt: PEFT adapter directory, .safetensors file or meta-train run "
     "directory (prompt.init_path)", None),
    ("file+psi", supmer.file_psi_init, "a meta-train --method supmer run's prompt (prompt.init_path = the run), "
     "tuned with the run's ψ applied frozen to every gradient", supmer.grad_hook_for),
    ("task-names", task_names_init, "MPT: one row per labelled source-task name (mean token embedding; labelled.*), "
     "then frequent tokens (prompt.vocab_top)", None),
    ("target-name", inits.target_name_init, "MPT's PT baseline: the target's own name (mean token embedding), then "
     "frequent tokens (prompt.vocab_top)", None),
    ("metapt", lambda ctx: meta_init("metapt", ctx),
     "MetaPT: meta-trained on pseudo-tasks from a clustered unlabeled corpus (meta.*, pseudo.*)", None),
    ("mpt-maml", lambda ctx: meta_init("mpt-maml", ctx),
     "MPT: second-order MAML over labelled source tasks (labelled.*)", None),
    ("mpt-fomaml", lambda ctx: meta_init("mpt-fomaml", ctx),
     "MPT: first-order MAML over labelled source tasks (labelled.*)", None),
    ("mpt-reptile", lambda ctx: meta_init("mpt-reptile", ctx),
     "MPT: Reptile over labelled source tasks (labelled.*)", None),
    ("multitask", lambda ctx: meta_init("multitask", ctx),
     "multi-task (PPT-style) prompt trained jointly on the MPT source tasks", None),
    ("supmer", lambda ctx: supmer.supmer_init(ctx, False),
     "SUPMER: meta-trained on five self-supervised task types of a clustered corpus (ψ + curriculum mixup; meta.*)",
     None),
    ("supmer+psi", lambda ctx: supmer.supmer_init(ctx, True),
     "the supmer prompt, tuned with its learned ψ applied frozen to every gradient", supmer.grad_hook_for),
    ("bayes", bayes.bayes_init,
     "BayesPrompt: slots = means of SVGD particles of a GMM fitted to k-shot train features (bayes.*)", None),
]

LEARNERS = [  # (name, gradient function, description, init_state, finalize)
    ("maml", meta.maml, "second-order MAML: query loss through the inner steps (needs eager attention)", None, None),
    ("fomaml", meta.fomaml, "first-order MAML: the query gradient at the adapted prompt, applied to the prompt",
     None, None),
    ("reptile", meta.reptile, "Reptile: move toward the prompts adapted on each task's support set", None, None),
    ("multitask", meta.multitask, "multi-task training: the gradient of the mean over tasks of each task's mean loss",
     None, None),
    ("supmer", supmer.supmer_learner, "SUPMER: first-order prompt meta-gradient through a learned gradient transform "
     "ψ, curriculum mixup on the query", supmer.supmer_init_state, supmer.supmer_finalize),
]

SOURCES = [  # (name, factory, description)
    ("pseudo", pseudo.pseudo_factory, "MetaPT: N-way pseudo-tasks over clusters of an unlabeled corpus"),
    ("labelled", labelled.labelled_factory, "MPT: (dataset, k-shot seed) tasks from labelled source datasets"),
    ("selfsup", selfsup.selfsup_factory, "SUPMER: five self-supervised task types over a clustered unlabeled corpus"),
]


def register_all() -> None:
    """Fill the three registries with the shipped entries (idempotent)."""
    global _done
    if _done:
        return
    for name, fn, description, hook in INITS:
        register_init(name, description, grad_hook=hook)(fn)
    for name, fn, description, init_state, finalize in LEARNERS:
        register_learner(name, description, init_state=init_state, finalize=finalize)(fn)
    for name, factory, description in SOURCES:
        register_source(name, description)(factory)
    _done = True
