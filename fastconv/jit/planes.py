"""A plane padded and stored by row phase, so that one loop over the whole plane reaches one tap of every
window (used by the max-pool backward and the dw of convs with one input channel per group).

The padded plane P holds an (H, W) plane with its padding in rows ``Wq * sw`` long, ``Wq`` being at least
the windows a row holds, so window j of padded row t starts at ``P[(t*Wq + j)*sw]``. The rows are stored
by phase: padded row r' = r + ph at slot ``(r' % sh) * ns + r' // sh``. Then tap a of output row i (padded
row i*sh + a*dh) is at slot ``row_at[a] / Wq + i``, and window (i, j)'s tap (a, e) is at
``P[(row_at[a] + i*Wq + j)*sw + e*dw]``: for a given tap, one loop over ``q = i*Wq + j`` (``Lo = Ho*Wq``
iterations) reaches it in every window, at a constant stride sw. The windows j >= Wo of each row are
computed too and never used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._numba import inline


class PlaneLayout(NamedTuple):
    Wq: int  # windows per padded row (>= Wo)
    L: int  # windows in the padded plane: sh * ns * Wq
    Lo: int  # output windows in the layout: Ho * Wq
    plane_len: int  # elements of P, with a row of slack for the taps of the last row's unused windows
    plane_row: np.ndarray  # (H,): where input row r starts in P (its column 0), or -1 if no window reads it
    row_at: np.ndarray  # (KH,): tap a's slot of output row 0, times Wq


def padded_width(W: int, Wo: int, KW: int, sw: int, pw: int, dw: int) -> int:
    """Columns of a padded row: the left padding, the input, and every column a window reaches."""
    return max(pw + W, (Wo - 1) * sw + (KW - 1) * dw + 1)


def plane_layout(H: int, Ho: int, KH: int, sh: int, sw: int, ph: int, pw: int, dh: int, width: int
                 ) -> PlaneLayout:
    """The layout of one geometry; width: the columns of a padded row (the left padding, the input and
    every column a window reaches)."""
    Wq = -(-width // sw)
    Hp = (Ho - 1) * sh + (KH - 1) * dh + 1  # padded rows the windows reach
    ns = -(-Hp // sh)  # slots per row phase
    r = np.arange(H) + ph
    plane_row = np.where(r < Hp, ((r % sh) * ns + r // sh) * Wq * sw + pw, -1)
    a = np.arange(KH) * dh
    row_at = ((a % sh) * ns + a // sh) * Wq
    return PlaneLayout(Wq, sh * ns * Wq, Ho * Wq, (sh * ns + 1) * Wq * sw, plane_row.astype(np.intp),
                       row_at.astype(np.intp))


@inline
def load_plane(xp, P, plane_row):
    """Copy the plane's rows into the padded plane P (rows no window reads are left out; the padding
    is whatever P held: the caller fills it once)."""
    H, W = xp.shape
    for r in range(H):
        if plane_row[r] >= 0:
            at = max(plane_row[r], 0)
            for w in range(W):
                P[at + w] = xp[r, w]
