"""numba's threading layer: which one fastconv's parallel kernels run on, and what keeps each one safe.

numba runs every parallel loop of a process on one threading layer, fixed at the process's first
parallel call:

=========  ============  ==========  ==================================================================
layer      thread-safe   fork-safe   notes
=========  ============  ==========  ==================================================================
tbb        yes           yes         needs a TBB library numba can load (the ``tbb`` package)
omp        yes           no (GNU)    GNU OpenMP (Linux): numba kills a forked child (SIGTERM) at its
                                     first parallel call if the parent had made one; Intel's and LLVM's
                                     OpenMP runtimes are fork-safe
workqueue  no            yes         two Python threads in parallel code at once abort the process
=========  ============  ==========  ==================================================================

What fastconv does (see README, "Threads"):

- At import, if neither ``NUMBA_THREADING_LAYER`` nor ``numba.config.THREADING_LAYER`` was set and no
  parallel call has run yet, it asks numba for its ``forksafe`` selection: tbb if it loads (the optional
  ``tbb`` package: ``pip install fastconv[tbb]``), else omp where the OpenMP runtime is fork-safe (not on
  Linux), else workqueue. A layer the user chose is kept. What each layer costs: docs/threading.md.
- Under a layer that is not thread-safe, kernel launches from several Python threads are serialized by
  one lock (each launch already uses every thread), so concurrent calls stay safe.
- Under GNU OpenMP (the user's choice, or the layer already running when fastconv was imported), a
  forked child raises a RuntimeError that says what to do instead of being killed.
- After a fork the child gets a fresh launch lock: a lock held by another thread of the parent at the
  fork would otherwise stay held for ever in the child.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any

import numba

# (thread-safe, fork-safe) of the layers whose safety does not depend on a runtime; omp's: safety()
SAFETY = {"tbb": (True, True), "workqueue": (False, True)}


def _user_chose() -> bool:
    chosen = str(numba.config.THREADING_LAYER).lower()
    return bool(os.environ.get("NUMBA_THREADING_LAYER")) or chosen != "default"


def running_layer() -> str | None:
    """The layer numba runs on, or None before the process's first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def choose() -> str:
    """Set numba's layer selection to 'forksafe' unless the user chose one or a layer already runs.
    Returns what was done, for ``fastconv info``."""
    if running_layer() is not None:
        return "already running when fastconv was imported"
    _preload_pip_tbb()  # for a user's choice of tbb too
    if _user_chose():
        return f"chosen by the user ({numba.config.THREADING_LAYER})"
    numba.config.THREADING_LAYER = "forksafe"
    return "chosen by fastconv (numba's 'forksafe' selection)"


def _preload_pip_tbb() -> None:
    """The ``tbb`` package from PyPI puts libtbb in the environment's lib/, where numba's TBB layer does
    not look (it then falls back to workqueue). Loading it first by path lets numba find it by name."""
    if not sys.platform.startswith("linux"):
        return
    lib = os.path.join(sys.prefix, "lib", "libtbb.so.12")
    if os.path.exists(lib):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        except OSError:  # pragma: no cover - a broken install: numba picks workqueue
            pass


CHOICE = choose()


def omp_vendor() -> str | None:
    """The OpenMP runtime behind numba's omp layer ('GNU', 'Intel', 'MS'), if that layer is loaded."""
    mod = sys.modules.get("numba.np.ufunc.omppool")
    return getattr(mod, "openmp_vendor", None) if mod is not None else None


def safety(layer: str | None) -> tuple[bool, bool]:
    """(thread-safe, fork-safe) of a layer; omp is fork-safe unless its runtime is GNU's."""
    if layer == "omp":
        return True, omp_vendor() not in (None, "GNU")
    return SAFETY.get(layer or "", (False, False))


class _Guard:
    """The state launch() consults: the lock, the layer's safety, the process that made parallel calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threadsafe: bool | None = None  # None: not known until the first parallel call has run
        self.forksafe = True
        self.parallel_pid: int | None = None  # the process whose parallel calls fix the layer's state

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()

    def check_fork(self) -> None:
        """Raise instead of letting numba kill a child forked from a process that ran GNU OpenMP."""
        if not self.forksafe and self.parallel_pid is not None and self.parallel_pid != os.getpid():
            raise RuntimeError(
                "fastconv: this process was forked from one that ran fastconv's kernels under numba's "
                "'omp' threading layer with GNU OpenMP, which cannot run parallel code in a forked child "
                "(numba would kill the process). Use the 'spawn' or 'forkserver' start method, or set "
                "NUMBA_THREADING_LAYER=forksafe (or workqueue, or tbb with the tbb package) before the "
                "parent starts.")

    def learn(self) -> None:
        """Record the running layer's safety, once it runs."""
        layer = running_layer()
        if layer is not None:
            self.threadsafe, self.forksafe = safety(layer)
            self.parallel_pid = os.getpid()


GUARD = _Guard()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: GUARD.after_fork_in_child())


def launch(fn: Any, *args: Any, threads: int | None) -> Any:
    """Call a parallel kernel on ``threads`` threads (None: numba's count), safely under any layer."""
    guard = GUARD
    if guard.threadsafe is None:
        guard.learn()  # a layer started before fastconv's first call (by the user's own numba code)
    guard.check_fork()
    if guard.threadsafe:
        if threads is not None:
            numba.set_num_threads(threads)
        return fn(*args)
    with guard.lock:
        if threads is not None:
            numba.set_num_threads(threads)
        result = fn(*args)
        if guard.threadsafe is None:
            guard.learn()
    return result
