"""Progress display: one overall bar per command, detail bars that do not linger, nothing when nobody watches.

Every progress bar of the package comes from :func:`progress_bar`, which picks one of three displays:

* terminal (stderr is a TTY): tqdm's text bars; the overall bar stays when done, nested bars (``nested=True``, or
  any bar opened while an overall bar is open) erase their line when they close;
* Jupyter kernel: no ipywidgets. Only the overall bar shows, as one ``text/plain`` display updated in place (at
  most every half second) and ending on its final line, so a saved or reopened notebook shows one finished line
  per command instead of stale "0%" widgets; nested bars are hidden;
* anything else (output redirected to a file or a pipe, CI, a worker process): no bars at all.

A disabled bar (``enabled=False``, e.g. ``--quiet``) still iterates and accepts ``update``/``set_postfix``.
IPython is never imported to detect a kernel (it is looked up among the imported modules); only inside a running
kernel is ``IPython.display`` imported, to draw the line.

Overall bars: fewshot rows, benchmark rows, bayes rows, meta-train steps, domain-generalisation runs, similarity's
task prompts, and corpus embedding when it runs on its own (``cluster``). Nested: tuning steps (single and grid),
evaluation batches, SVGD iterations, and embedding inside a command.
"""
from __future__ import annotations

import sys
import weakref

from tqdm.std import tqdm

KERNEL_MININTERVAL = 0.5  # seconds between display updates in a notebook
KERNEL_NCOLS = 100

_open_overall: "weakref.WeakSet[_Bar]" = weakref.WeakSet()  # overall bars open now (a dropped bar closes)


class _Bar(tqdm):
    """A tqdm bar that knows whether it is the command's overall bar (and leaves the stack of them when closed)."""
    overall = False
    cell = None  # the IPython execution count an overall bar was opened in (None outside IPython)

    def close(self):
        if self.overall and _open_overall is not None:  # None: module globals cleared at interpreter exit
            _open_overall.discard(self)
        super().close()


class _KernelBar(_Bar):
    monitor_interval = 0  # no monitor thread: display updates come from the thread that runs the cell


class _DisplayLine:
    """A text file for tqdm in a kernel: each status line tqdm writes (``\\r`` + line) replaces one display output."""
    encoding = "utf-8"  # tqdm draws block characters, not "#"

    def __init__(self):
        self.handle, self.text = None, ""

    def write(self, s: str) -> int:
        text = s.split("\r")[-1].rstrip()
        if text and text != self.text:
            self.text = text
            self._show({"text/plain": text})
        return len(s)

    def flush(self) -> None:
        pass

    def _show(self, data: dict) -> None:
        from IPython.display import display  # only in a kernel, where IPython is already imported
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)


def ipython_shell():
    """The running IPython shell (a kernel's or a terminal's), or None; IPython is not imported for this."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None


def kernel():
    """The running IPython kernel's shell, or None outside a Jupyter kernel."""
    shell = ipython_shell()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def _cell():
    """The IPython execution count (which cell runs now), or None outside IPython."""
    return getattr(ipython_shell(), "execution_count", None)


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def display_mode(stream=None) -> str:
    """``"kernel"`` in a Jupyter kernel, ``"terminal"`` when ``stream`` (default stderr) is a TTY, else ``"off"``."""
    if kernel() is not None:
        return "kernel"
    return "terminal" if is_terminal(sys.stderr if stream is None else stream) else "off"


def overall_open() -> bool:
    """Whether an overall bar is open now (under IPython: one opened by the running cell)."""
    cell = _cell()
    stale = [b for b in _open_overall if b.cell != cell]  # left open by a cell that raised
    for b in stale:
        _open_overall.discard(b)
    return bool(_open_overall)


def progress_bar(iterable=None, total: int | None = None, desc: str = "", *, nested: bool = False,
                 enabled: bool = True, unit: str = "it", initial: int = 0, file=None) -> tqdm:
    """A tqdm bar over ``iterable`` (or ``total`` steps, advanced with ``update``) shown as the module doc says.

    ``nested=True`` marks a detail loop (tuning steps, evaluation or embedding batches); a bar opened while an
    overall bar is open is nested too, so a helper's loop is the overall bar when called on its own and a detail
    bar inside a command. ``enabled=False`` hides it (``--quiet``, ``progress=False``). ``file``: the terminal to
    draw on (default ``sys.stderr``). Close it (or exhaust the iterable) when done.
    """
    nested = nested or overall_open()
    stream = sys.stderr if file is None else file
    mode = display_mode(stream)
    kw = {"total": total, "desc": desc, "unit": unit, "initial": initial}
    if not enabled or mode == "off" or (mode == "kernel" and nested):
        return tqdm(iterable, disable=True, **kw)
    if mode == "kernel":
        bar = _KernelBar(iterable, file=_DisplayLine(), mininterval=KERNEL_MININTERVAL, ncols=KERNEL_NCOLS,
                         position=0, leave=True, **kw)
    else:
        bar = _Bar(iterable, file=stream, leave=not nested, dynamic_ncols=True, **kw)
    if not nested:
        bar.overall, bar.cell = True, _cell()
        _open_overall.add(bar)
    return bar
