"""Where the compiled kernels are kept on disk, and the one note a process prints when it compiles them.

The location is decided once per process, first that applies:

1. ``FASTCONV_CACHE_DIR``, if set (a directory that cannot be written means no disk cache, said once);
2. numba's own ``NUMBA_CACHE_DIR``, if set (the same);
3. beside fastconv's sources (``__pycache__``), where the install is writable: the cache goes with the
   install and is removed with it;
4. else the user's cache directory (``$XDG_CACHE_HOME/fastconv``, ``~/Library/Caches/fastconv``,
   ``%LOCALAPPDATA%\\fastconv\\Cache``). A read-only install's own ``__pycache__`` is still read first:
   whoever installed fastconv can run ``fastconv compile`` once and every user loads those kernels;
5. else no disk cache: every process compiles.

numba's disk cache normally checks only the kernel's own source file before reusing it, and picks the
directory per function, falling back to a per-user directory without a word. Here every kernel's stamp
also covers every file a kernel can inline code from (KERNEL_SOURCES_HASH), each data file holds the key
it was saved under (_KeyedCacheFile), and all kernels share the one location above. (numba's caching
classes are internals; they have kept these names and signatures from 0.59 to 0.68.)
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numba.core import event
from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    IndexDataCacheFile,
    _CacheLocator,
    _SourceFileBackedLocatorMixin,
)

from .._config import CACHE, QUIET

_PACKAGE = Path(__file__).resolve().parent.parent


def sources_hash(paths: list[Path]) -> bytes:
    """SHA-256 over the files' names and contents, in the order given (a file that cannot be read, as in
    a zipped install, counts by its name alone)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            text = path.read_bytes()
        except OSError:
            text = b""
        h.update(path.name.encode() + b"\0" + text)
    return h.digest()


# Every source a kernel's compiled code can come from: the kernels' modules, the helpers and constants
# they take from one another (the tile records, the intrinsics, the shared geometry) and the compile flags.
KERNEL_SOURCES_HASH = sources_hash(sorted(_PACKAGE.glob("jit/**/*.py")) + sorted(_PACKAGE.glob("im2col/*.py"))
                                   + [_PACKAGE / "_geometry.py", _PACKAGE / "_config.py"])


def user_cache_dir() -> Path:
    """The platform's per-user cache directory for fastconv."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "fastconv" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastconv"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastconv"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Location:
    """Where this process keeps compiled kernels. root None with in_tree: beside the sources."""

    root: Path | None
    in_tree: bool
    source: str               # why this location: the variable that chose it, or the rule
    read_only_tree: bool      # a read-only install: its own __pycache__ is read before root
    problem: str | None = None  # why there is no disk cache, if there is none

    @property
    def enabled(self) -> bool:
        return self.in_tree or self.root is not None

    def describe(self) -> str:
        """One line for `fastconv info` and the compile note."""
        if not CACHE:
            return "off (FASTCONV_CACHE=0): every process compiles again"
        if self.problem:
            return f"none: {self.problem}"
        where = f"{_PACKAGE}{os.sep}**{os.sep}__pycache__" if self.in_tree else str(self.root)
        extra = (f"; kernels precompiled into the read-only install ({_PACKAGE}) are read first"
                 if self.read_only_tree else "")
        return f"{where} ({self.source}{extra})"


@functools.cache
def location() -> Location:
    """The cache location of this process (see the module's docstring for the order)."""
    import numba

    if not CACHE:
        return Location(None, False, "FASTCONV_CACHE=0", False, "turned off by FASTCONV_CACHE=0")
    for var, value in (("FASTCONV_CACHE_DIR", os.environ.get("FASTCONV_CACHE_DIR")),
                       ("NUMBA_CACHE_DIR", numba.config.CACHE_DIR)):
        if value:
            root = Path(value).expanduser().resolve()
            if _writable(root):
                return Location(root, False, var, False)
            return Location(None, False, var, False,
                            f"{var}={value} cannot be written; set {var} to a writable directory")
    if _writable(_PACKAGE / "jit" / "__pycache__"):
        return Location(None, True, "beside the installed sources", False)
    user = user_cache_dir()
    read_only_tree = (_PACKAGE / "jit" / "__pycache__").is_dir()
    if _writable(user):
        return Location(user, False, "the install is read-only: the user's cache directory", read_only_tree)
    return Location(None, False, "", read_only_tree,
                    f"neither the install ({_PACKAGE}) nor {user} can be written; "
                    "set FASTCONV_CACHE_DIR to a writable directory")


class _KeyedCacheFile(IndexDataCacheFile):
    """numba's index and data files, each data file also holding the key it was saved under, and a load
    that finds another key there a miss (the kernel compiles again).

    numba names a new data file by the first number its index does not use yet. Two processes compiling
    two overloads of one function at once (two tiles of a kernel family, float32 and float64, a worker
    pool on a cold cache) can both pick the same number: each writes its code to that file and its key
    to the index, the last writer of each wins, and the index can then send one overload's key to the
    other's code. The other tile's kernel reading weights packed for this one computes wrong results;
    with this check, a lost race costs a compile instead. The file also holds the sources' stamp: a
    process running other sources (an upgrade while another process compiles) starts the index afresh
    and so reuses the same numbers, and its code must not pass for this one's."""

    def save(self, key: Any, data: Any) -> None:
        super().save(key, (key, self._source_stamp, data))

    def load(self, key: Any) -> Any:
        try:
            found = super().load(key)
        except OSError:  # an unreadable file: a miss
            return None
        if not (isinstance(found, tuple) and len(found) == 3 and found[0] == key
                and found[1] == self._source_stamp):
            return None
        return found[2]


class _Files:
    """The writable cache files of a kernel, then read-only ones (a read-only install's __pycache__)."""

    def __init__(self, writable: _KeyedCacheFile, read_only: list[_KeyedCacheFile]) -> None:
        self._writable = writable
        self._all = [writable, *read_only]

    def load(self, key: Any) -> Any:
        for f in self._all:
            data = f.load(key)
            if data is not None:
                return data
        return None

    def save(self, key: Any, data: Any) -> None:
        self._writable.save(key, data)

    def flush(self) -> None:
        self._writable.flush()


class _Locator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """numba's locator for a fastconv kernel: the process's one Location."""

    def __init__(self, py_func: Any, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        loc = location()
        if loc.in_tree:
            self._cache_path = os.path.join(os.path.dirname(py_file), "__pycache__")
        else:
            assert loc.root is not None
            self._cache_path = os.path.join(str(loc.root), self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self) -> str:
        return self._cache_path


class _Impl(CompileResultCacheImpl):
    _locator_classes = [_Locator]


class KernelCache(FunctionCache):
    """A fastconv kernel's disk cache: the shared location, the wider stamp, keyed data files."""

    _impl_class = _Impl

    def __init__(self, py_func: Any) -> None:
        super().__init__(py_func)
        stamp = (self._impl.locator.get_source_stamp(), KERNEL_SOURCES_HASH)
        base = self._impl.filename_base
        read_only = []
        py_file = Path(self._impl.locator._py_file).resolve()
        if location().read_only_tree and _PACKAGE in py_file.parents:
            tree = os.path.join(os.path.dirname(py_file), "__pycache__")
            read_only.append(_KeyedCacheFile(cache_path=tree, filename_base=base, source_stamp=stamp))
        self._cache_file = _Files(_KeyedCacheFile(cache_path=self._cache_path, filename_base=base,
                                                  source_stamp=stamp), read_only)


# ------------------------------------------------------------------------------ the compile note
_KERNELS: weakref.WeakSet[Any] = weakref.WeakSet()
_noted = threading.Event()


def _note() -> str:
    import numba

    from ._isa import target_isa

    try:
        import llvmlite.binding as llvm

        # the CPU numba compiles for: NUMBA_CPU_NAME's (bench/avx2.py sets haswell), else the host
        cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover
        cpu = "this CPU"
    loc = location()
    if loc.enabled:
        kept = f"They are kept in {loc.describe()}; `fastconv compile` compiles them all ahead of time."
    else:
        kept = f"They cannot be kept on disk: {loc.problem}."
    return (f"fastconv: compiling kernels for this CPU ({cpu}, {target_isa()} tiles) on their first use: "
            f"a few seconds per op and dtype. {kept} (FASTCONV_QUIET=1 hides this note.)")


class _CompileNote(event.Listener):
    """Prints the note when the first fastconv kernel of the process compiles (not when it loads)."""

    def on_start(self, ev: Any) -> None:
        data = ev.data or {}
        if not _noted.is_set() and data.get("dispatcher") in _KERNELS:
            _noted.set()
            if not QUIET:
                print(_note(), file=sys.stderr, flush=True)

    def on_end(self, ev: Any) -> None:
        pass


_listening = threading.Lock()
_LISTENER: list[_CompileNote] = []


def watch(dispatcher: Any) -> None:
    """Count the dispatcher as a fastconv kernel for the compile note."""
    with _listening:
        if not _LISTENER:
            _LISTENER.append(_CompileNote())
            event.register("numba:compile", _LISTENER[0])
    _KERNELS.add(dispatcher)
