"""Scratch buffers reused across calls, one set per Python thread.

Why: on these machines a freshly allocated buffer costs a page fault per 4 KiB on first touch, which made
the im2col unfold 3x slower than the copy itself. Reusing the same pages avoids that. A buffer is never
returned to a caller; ``release_workspace()`` frees the calling thread's buffers.
"""

from __future__ import annotations

import math
import threading

import numpy as np

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
    """Free the scratch buffers fastconv keeps for the calling thread (they are made again on demand)."""
    _local.__dict__.pop("bufs", None)


PREFAULT_BYTES = 1 << 20
PAGE = 4096
# Tests set this: fresh() then fills its (undefined) contents with NaN, so any position a kernel fails to
# write shows up in the result instead of whatever the memory held.
POISON = False


def fresh(shape: tuple[int, ...], dtype: np.dtype, zero: bool = False) -> np.ndarray:
    """A new result array starting on a 64-byte boundary, contents undefined, its pages faulted in by
    this thread before any kernel writes it; zero=True: zero-filled.

    Two threads taking first-touch page faults at once contend in the kernel: measured here, a parallel
    kernel writing a fresh 32 MiB float64 array spent 19 ms faulting, against 3.6 ms for one memset.
    Writing one byte per page takes the faults without the memset's traffic: where malloc reuses pages
    (results under 32 MiB, called repeatedly) it costs 0.02-0.05 ms against 0.5-1.3 ms for a fill of
    12-26 MB, and on fresh pages half of the fill's time."""
    out = aligned_empty(math.prod(shape), dtype).reshape(shape)
    if zero:
        out.fill(0)
    elif POISON:
        out.fill(np.nan)
    elif out.nbytes >= PREFAULT_BYTES:
        out.reshape(-1).view(np.uint8)[::PAGE] = 0
    return out
