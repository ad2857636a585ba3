"""The jit conv's thresholds and chunk sizes, in one table: every tunable named and documented here, read
when a call is planned (never compiled into a kernel), and resettable.

    from fastconv.jit.conv.tunables import TUNABLES
    with TUNABLES.override(panel_bytes=1 << 16):
        ...                 # calls planned here use the new value
    TUNABLES.reset()        # every tunable back to its default

None of them changes a result: they move work between tasks and chunks whose sums do not depend on
them, except where noted (the dw chunk sizes set the order in which a batch's terms are added, so they
change the last bits of dw, never its thread-count independence). The measurements behind each default
are in docs/jit-conv.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields


@dataclass
class Tunables:
    packed_images_per_thread: int = 4
    """The forward and dx pack each image inside the task that computes it (one pass less) from this many
    images per thread; with fewer, packing in the tasks would leave threads idle (one image, one thread)."""

    panel_bytes: int = 1 << 19
    """One task's packed input columns in the float64 pointwise panels: with the weights, within a
    core's L2."""

    fold_bytes: int = 2 << 20
    """The largest per-thread GEMM result of the dx fold (one input channel per group): a core's L2;
    larger images take the phases."""

    dw_tasks_per_thread: int = 1
    """Tasks per thread of the channel-vector dw kernels: every task reads every chunk of the batch, so
    fewer tasks read less."""

    dw_chunk_bytes: int = 1 << 20
    """Images per chunk of the channel-vector dw: the chunk's input and dout within this many bytes
    (about half of a core's L2). Sets the order of dw's sums over the batch."""

    pw_dw_chunk_bytes: int = 2 << 20
    """The same for the pointwise dw, which keeps only its own channels of a chunk in cache."""

    dw_pixels_chunk_bytes: int = 1 << 20
    """Images per chunk of the output-column dw: one channel's packed input and PF channels of dout
    within this many bytes. Sets the order of dw's sums over the batch."""

    rows_per_set: int = 4
    """At most this many of a dw tile's dout rows may start in one L1 set (of 8 or 12 ways): rows whose
    length is a multiple of 4 KiB are padded (see dw_chans._row_stride)."""

    def reset(self) -> None:
        """Every tunable back to its default."""
        for f in fields(self):
            setattr(self, f.name, f.default)

    @contextlib.contextmanager
    def override(self, **values: int) -> Iterator[Tunables]:
        """Set some tunables for the duration of a with block (unknown names raise TypeError)."""
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown tunables {sorted(unknown)}; known: {sorted(names)}")
        saved = {name: getattr(self, name) for name in values}
        for name, value in values.items():
            setattr(self, name, value)
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)


TUNABLES = Tunables()
