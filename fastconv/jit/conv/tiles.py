"""The register tiles of the jit conv kernels, as data: one record per tile variant, which the kernels are
generated from (each kernel module's ``*_kernel(tile, ...)``) and which the pickers below choose among.

A tile is ``rows`` x ``cols`` sums held in vector registers while a kernel runs through its terms; cols
is a whole number of vectors. What rows and cols count depends on the family:

========== =============================================== ================================= ==============
family     rows                                            cols                              channels (*)
========== =============================================== ================================= ==============
channels   output channels (forward; dx: input channels)   columns of an output row          output / group
rows       output rows of one channel                      columns of an output row          output / group
panels     output channels of a pointwise conv             pixels of a packed panel          any
dw_taps    taps (input channel, kh, kw): QB               output channels                   any
dw_pixels  kernel columns per tile (PF output channels)    output columns (the vector)       any
dw_chans   output channels                                 input channels (the vector)       input / group
========== =============================================== ================================= ==============

(*) the channels per group a tile is for: ``min_channels <= channels <= max_channels``.

``speed`` is a tile's measured speed per computed element relative to the family's first tile of its
dtype and ISA, where neither pads (docs/jit-conv.md has the measurements); the pickers weigh padding
against it. ``variants`` names the kernels generated for the tile (see each family's kernel module).

``isa`` is the register file a tile is sized for (``_isa.target_isa``): "avx512", 32 registers of 64
bytes, or "avx2", 16 of 32 bytes, where an AVX-512 tile's accumulators would spill (16 x 16 float32
sums are 32 registers of 32 bytes). A picker takes the records of the target's ISA, and a family or
channel range that has none for it takes the "avx512" records. Every record compiles and runs on any x86
CPU (LLVM splits or joins vectors as the CPU needs), so the tests run every ISA's tiles here.

Adding a tile is adding a record: the kernels compile from it on first use (numba's disk cache keys them
by the tile's shape, see _numba.kernel), and the tests run every record against naive and bitwise
against its family's other tiles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .._isa import target_isa

ACC = 512  # stack elements of the largest forward-style tile (tests check every record fits)
QB = 16  # taps per dw_taps tile
PF = 4  # output channels per dw_pixels tile
ACC_DWP = 320  # stack elements of the largest dw_pixels tile: PF x 5 kernel columns x 16 lanes


@dataclass(frozen=True)
class Tile:
    """One tile variant of one kernel family (see the module's table)."""

    family: str
    dtype: str
    rows: int
    cols: int
    min_channels: int = 1
    max_channels: int | None = None
    speed: float = 1.0
    variants: tuple[str, ...] = ("fwd",)
    isa: str = "avx512"

    def serves(self, channels: int) -> bool:
        return self.min_channels <= channels and (self.max_channels is None or channels <= self.max_channels)

    @property
    def block(self) -> int:
        """Output channels per block of packed weights: a row tile computes one channel."""
        return 1 if self.family == "rows" else self.rows

    def __str__(self) -> str:
        return f"{self.family} {self.dtype} {self.rows}x{self.cols} ({self.isa})"


_FORWARD = ("fwd", "overlap", "packed", "phases")

TILES: tuple[Tile, ...] = (
    # Forward and dx, more than 4 channels per group: the picker weighs padding against speed.
    Tile("channels", "float32", 16, 16, 5, None, 1.0, (*_FORWARD, "fold")),
    Tile("channels", "float32", 8, 32, 5, None, 1.10, _FORWARD),
    Tile("channels", "float32", 12, 32, 5, None, 1.15, _FORWARD),
    Tile("channels", "float64", 8, 16, 5, None, 1.0, (*_FORWARD, "fold")),
    Tile("channels", "float64", 5, 24, 5, None, 0.93, ("fwd", "packed", "phases", "fold")),
    # 2 to 4 channels per group (dx of a 3-channel input): a 16-channel tile would compute 12-14 zeros.
    Tile("channels", "float32", 4, 32, 2, 4, 1.0, ("fwd", "packed", "phases")),
    Tile("channels", "float64", 4, 16, 2, 4, 1.0, ("fwd", "packed", "phases")),
    # One channel per group (depthwise; dx of a 1-channel input): 4 output rows of one channel.
    Tile("rows", "float32", 4, 32, 1, 1),
    Tile("rows", "float64", 4, 16, 1, 1),
    # Pointwise convs, float64 on AVX-512 only: in float32 the panels were no faster than the channel
    # tiles, and on AVX2 the AVX2 channel tiles were faster than these.
    Tile("panels", "float64", 8, 16),
    # dw, by taps: the general case (a padded dout row would meet a non-finite input).
    Tile("dw_taps", "float32", QB, 16),
    Tile("dw_taps", "float64", QB, 8),
    # dw, vectors along output columns: few input channels per group. float32's 5 columns where that
    # computes fewer kernel columns than 4; float64 has no 5-column tile (20 sums and 9 operands fill
    # the 32 vector registers: it was no faster).
    Tile("dw_pixels", "float32", 4, 16),
    Tile("dw_pixels", "float32", 5, 16),
    Tile("dw_pixels", "float64", 4, 8),
    # dw, vectors along input channels (cols), from one vector's worth of input channels per group;
    # "pointwise": its variant for flat pointwise convs that transposes in its own tasks.
    Tile("dw_chans", "float32", 8, 32, 32, None, 1.0, ("taps", "pointwise")),
    Tile("dw_chans", "float32", 12, 32, 32, None, 1.1, ("taps", "pointwise")),
    Tile("dw_chans", "float32", 16, 16, 16, None, 1.0, ("taps", "pointwise")),
    Tile("dw_chans", "float64", 8, 16, 16, None, 1.0, ("taps", "pointwise")),
    Tile("dw_chans", "float64", 16, 8, 8, None, 1.0, ("taps",)),
    # AVX2: one 64-byte vector of columns (two registers) per row, at most 12 accumulator registers.
    Tile("channels", "float32", 6, 16, 5, None, 1.0, (*_FORWARD, "fold"), "avx2"),
    Tile("channels", "float32", 4, 16, 2, None, 0.94, (*_FORWARD, "fold"), "avx2"),
    Tile("channels", "float64", 6, 8, 5, None, 1.0, (*_FORWARD, "fold"), "avx2"),
    Tile("channels", "float64", 4, 8, 2, None, 0.94, (*_FORWARD, "fold"), "avx2"),
    Tile("dw_chans", "float32", 6, 16, 16, None, 1.0, ("taps", "pointwise"), "avx2"),
    Tile("dw_chans", "float32", 4, 16, 16, None, 1.02, ("taps", "pointwise"), "avx2"),
    Tile("dw_chans", "float64", 6, 8, 8, None, 1.0, ("taps", "pointwise"), "avx2"),
    Tile("dw_chans", "float64", 4, 8, 8, None, 0.97, ("taps", "pointwise"), "avx2"),
)


# The pickers are remembered (they run on every call; TILES does not change): besides the time, a
# tuple built from a generator per call fills CPython's tuple free lists, which tracemalloc counts.
@functools.lru_cache(maxsize=64)
def tiles(family: str, dtype: np.dtype | str, variant: str | None = None, isa: str | None = None
          ) -> tuple[Tile, ...]:
    """The records of family for dtype (with the kernel variant and for the ISA, if given), in the table's
    order."""
    name = np.dtype(dtype).name
    return tuple(t for t in TILES if t.family == family and t.dtype == name
                 and (variant is None or variant in t.variants) and (isa is None or t.isa == isa))


def _for_isa(found: list[Tile], isa: str | None) -> list[Tile]:
    """Those of found sized for isa (the target's by default), or if none is, the AVX-512 ones."""
    isa = isa or target_isa()
    return [t for t in found if t.isa == isa] or [t for t in found if t.isa == "avx512"]


def _padded(n: int, step: int) -> int:
    return -(-n // step) * step


@functools.lru_cache(maxsize=256)
def conv_tile(channels: int, dtype: np.dtype, width: int, variant: str = "fwd", isa: str | None = None
              ) -> Tile:
    """The forward-style tile (channels or rows family) for this many output channels per group and
    output rows of width columns, among those with the kernel variant for the ISA: the one that computes
    the least padding per unit of speed (the table's first on a tie)."""
    found = _for_isa([t for family in ("channels", "rows") for t in tiles(family, dtype, variant)
                      if t.serves(channels)], isa)
    if not found:
        raise LookupError(f"no {variant} tile for {channels} channels per group in {np.dtype(dtype).name}")
    return min(found, key=lambda t: _padded(channels, t.rows) * _padded(width, t.cols) / t.speed)


@functools.lru_cache(maxsize=8)
def panel_tile(dtype: np.dtype, isa: str | None = None) -> Tile | None:
    """The pointwise panel tile of dtype for the ISA, or None where the panels are not used. No fallback
    to another ISA's: on AVX2 the flattened channel tiles beat the AVX-512 panels (pw 1.85x)."""
    found = tiles("panels", dtype, isa=isa or target_isa())
    return found[0] if found else None


@functools.lru_cache(maxsize=256)
def dw_chans_tile(in_channels: int, out_channels: int, dtype: np.dtype, isa: str | None = None
                  ) -> Tile | None:
    """The channel-vector dw tile for these channels per group: the widest vector (cols) the input
    channels fill, and of the tiles with it the one that computes the fewest padded output channels per
    unit of speed; None if the input channels fill no tile's vector."""
    found = _for_isa([t for t in tiles("dw_chans", dtype) if t.serves(in_channels)], isa)
    if not found:
        return None
    kv = max(t.cols for t in found)
    return min((t for t in found if t.cols == kv), key=lambda t: _padded(out_channels, t.rows) / t.speed)


@functools.lru_cache(maxsize=64)
def dw_pixels_tile(kernel_width: int, dtype: np.dtype) -> Tile:
    """The output-column dw tile that computes the fewest kernel columns (the table's first on a tie)."""
    return min(tiles("dw_pixels", dtype), key=lambda t: _padded(kernel_width, t.rows) / t.speed)


@functools.lru_cache(maxsize=8)
def dw_taps_tile(dtype: np.dtype) -> Tile:
    return tiles("dw_taps", dtype)[0]
