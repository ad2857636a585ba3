"""Scratch buffers reused across calls, one set per Python thread, and the memory of large results.

Why: on these machines a freshly allocated buffer costs a page fault per 4 KiB on first touch, which made
the im2col unfold 3x slower than the copy itself. Reusing the same pages avoids that. A scratch buffer is
never returned to a caller; ``release_workspace()`` frees the calling thread's buffers.

Results (``fresh``) of RECYCLE_MIN_BYTES or more are recycled: when no array uses a result's memory any
more, its pages are kept (up to _config.RECYCLE_BYTES in all) for the next result of about its size.
glibc's malloc does this itself for blocks under 32 MiB; larger ones it unmaps on free, and measured here
a new 51 MB result then cost 1.65 copies of its bytes in page faults before a kernel wrote a byte (8.1
against 4.9 ms for np.copyto), every call.
"""

from __future__ import annotations

import math
import os
import threading
import weakref

import numpy as np

from ._config import RECYCLE_BYTES

_local = threading.local()

ALIGN = 64  # bytes: a cache line, and the width of an AVX-512 vector


def aligned_empty(size: int, dtype: np.dtype) -> np.ndarray:
    """np.empty(size, dtype), starting on a 64-byte boundary.

    NumPy aligns its data to 16 bytes only. A packed buffer whose rows of 16 float64 start 16 bytes off a
    cache line splits every other vector load across two lines: measured here, the float64 pw forward
    ran 1.15x slower (7.5 against 6.5 ms) with its panel buffer 16 or 32 bytes off."""
    dtype = np.dtype(dtype)
    raw = np.empty(size * dtype.itemsize + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + size * dtype.itemsize].view(dtype)


def scratch(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D scratch array of ``size`` elements for this thread, contents undefined, starting on a 64-byte
    boundary."""
    bufs: dict[str, np.ndarray] = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.dtype != dtype or buf.size < size:
        bufs.pop(name, None)  # free the old one before allocating its successor
        buf = aligned_empty(size, dtype)
        bufs[name] = buf
    return buf[:size]


def release_workspace() -> None:
    """Free the scratch buffers fastconv keeps for the calling thread, and the memory of large results it
    keeps for reuse (both are made again on demand)."""
    _local.__dict__.pop("bufs", None)
    with _free_lock:
        _free.clear()


# Results this large are recycled: glibc's malloc unmaps freed blocks from 32 MiB (its largest mmap
# threshold) and reuses smaller ones itself.
RECYCLE_MIN_BYTES = 32 << 20
_free: list[np.ndarray] = []  # uint8 owners of recycled results' memory that no array uses, oldest first
_free_lock = threading.RLock()  # reentrant: a result freed by the garbage collector while it is held


def _reset_after_fork() -> None:
    global _free_lock
    _free_lock = threading.RLock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _give_back(owner: np.ndarray) -> None:
    """Keep owner's memory for a later result; drop the oldest kept beyond RECYCLE_BYTES in all."""
    with _free_lock:
        _free.append(owner)
        total = sum(b.nbytes for b in _free)
        while _free and total > RECYCLE_BYTES:
            total -= _free.pop(0).nbytes


def _take(nbytes: int) -> np.ndarray | None:
    """The smallest kept owner that holds nbytes (aligned) and is at most a quarter larger, or None."""
    need = nbytes + ALIGN
    with _free_lock:
        fits = [i for i, b in enumerate(_free) if need <= b.nbytes <= need + nbytes // 4]
        if not fits:
            return None
        return _free.pop(min(fits, key=lambda i: _free[i].nbytes))


class _Lease:
    """One result's hold on a recycled owner's memory, exposed to NumPy by the array interface: NumPy
    keeps this object as the base of the array made from it (it would see through a memoryview to the
    owner), so every array sharing the memory (views, slices) holds it, and it dies with the last one."""

    __slots__ = ("__array_interface__", "owner", "__weakref__")

    def __init__(self, owner: np.ndarray) -> None:
        self.owner = owner
        self.__array_interface__ = {"shape": owner.shape, "typestr": "|u1", "version": 3,
                                    "data": (owner.ctypes.data, False)}


def _recycled_empty(size: int, dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """aligned_empty's array, in recycled memory when some is kept, and whether its pages are new. Its
    memory goes back to the kept list (_give_back) when the last array using it dies (see _Lease)."""
    dtype = np.dtype(dtype)
    nbytes = size * dtype.itemsize
    owner = _take(nbytes)
    new = owner is None
    if new:
        owner = np.empty(nbytes + ALIGN, np.uint8)
    lease = _Lease(owner)
    weakref.finalize(lease, _give_back, owner).atexit = False
    raw = np.asarray(lease)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype), new


PREFAULT_BYTES = 1 << 20
PAGE = 4096
# Tests set this: fresh() then fills its (undefined) contents with NaN, so any position a kernel fails to
# write shows up in the result instead of whatever the memory held.
POISON = False


def fresh(shape: tuple[int, ...], dtype: np.dtype, zero: bool = False) -> np.ndarray:
    """A new result array starting on a 64-byte boundary, contents undefined, its pages faulted in by
    this thread before any kernel writes it (or recycled, see the module's docstring); zero=True:
    zero-filled.

    Two threads taking first-touch page faults at once contend in the kernel: measured here, a parallel
    kernel writing a fresh 32 MiB float64 array spent 19 ms faulting, against 3.6 ms for one memset.
    Writing one byte per page takes the faults without the memset's traffic: where malloc reuses pages
    (results under 32 MiB, called repeatedly) it costs 0.02-0.05 ms against 0.5-1.3 ms for a fill of
    12-26 MB, and on fresh pages half of the fill's time."""
    size = math.prod(shape)
    new_pages = True
    if RECYCLE_BYTES and size * np.dtype(dtype).itemsize >= RECYCLE_MIN_BYTES:
        flat, new_pages = _recycled_empty(size, dtype)
        out = flat.reshape(shape)
    else:
        out = aligned_empty(size, dtype).reshape(shape)
    if zero:
        out.fill(0)
    elif POISON:
        out.fill(np.nan)
    elif new_pages and out.nbytes >= PREFAULT_BYTES:
        out.reshape(-1).view(np.uint8)[::PAGE] = 0
    return out
