"""Recycled result memory (_workspace.fresh for large results): reused only once no array uses it, within
its cap, per thread safely, and every kernel writes all of a result that starts with another's values."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from tables import assert_close
from test_reliability import _run

import fastconv
from fastconv import _workspace

SMALL = 1 << 12  # bytes: results from this size on are recycled in these tests


@pytest.fixture
def recycling(monkeypatch):
    """Recycle results from SMALL bytes on, starting with nothing kept."""
    monkeypatch.setattr(_workspace, "RECYCLE_MIN_BYTES", SMALL)
    monkeypatch.setattr(_workspace, "RECYCLE_BYTES", 1 << 30)
    fastconv.release_workspace()
    yield
    fastconv.release_workspace()


def _kept() -> list[int]:
    gc.collect()
    return [b.ctypes.data for b in _workspace._free]


def test_memory_is_reused_only_once_no_array_uses_it(recycling):
    a = _workspace.fresh((64, 64), np.float32)
    where = a.ctypes.data
    view = a[3:, 5:]
    column = np.asarray(a[:, 0])
    del a
    assert _kept() == []  # its views still use it
    del view
    assert _kept() == []
    del column
    assert len(_kept()) == 1
    b = _workspace.fresh((64, 64), np.float32)
    assert b.ctypes.data == where and b.ctypes.data % _workspace.ALIGN == 0
    c = _workspace.fresh((64, 64), np.float32)  # b still holds it
    assert c.ctypes.data != where
    assert _kept() == []


def test_only_a_close_size_is_reused(recycling):
    a = _workspace.fresh((1 << 12,), np.float64)
    del a
    big = _workspace.fresh((1 << 13,), np.float64)  # larger: never put in a smaller block
    small = _workspace.fresh((1 << 10,), np.float64)  # a quarter: would waste the rest
    assert len(_kept()) == 1
    near = _workspace.fresh((7 << 9,), np.float64)  # 7/8 of it: reused
    assert _kept() == []
    del big, small, near


def test_kept_memory_stays_within_the_cap(recycling, monkeypatch):
    size = 1 << 14
    monkeypatch.setattr(_workspace, "RECYCLE_BYTES", 3 * (size * 4 + _workspace.ALIGN))
    arrays = [_workspace.fresh((size,), np.float32) for _ in range(5)]
    owners = [id(a.base.base.owner) for a in arrays]  # result -> uint8 array -> its _Lease
    while arrays:
        arrays.pop(0)  # freed first to last
    gc.collect()
    assert [id(b) for b in _workspace._free] == owners[2:]  # the two oldest dropped
    assert sum(b.nbytes for b in _workspace._free) <= _workspace.RECYCLE_BYTES
    fastconv.release_workspace()
    assert _kept() == []


def test_threads_never_share_a_result(recycling):
    errors = []

    def work(tag: float) -> None:
        for _ in range(300):
            a = _workspace.fresh((4096,), np.float32)
            a.fill(tag)
            b = _workspace.fresh((4096,), np.float32)
            b.fill(-tag)
            if not ((a == tag).all() and (b == -tag).all()):
                errors.append(tag)
            del a, b

    threads = [threading.Thread(target=work, args=(float(t + 1),)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_write_every_element_of_recycled_memory(recycling, monkeypatch, dtype):
    """Results made in memory that holds an earlier result's values (no NaN poison): each op, run twice,
    matches naive both times."""
    monkeypatch.setattr(_workspace, "POISON", False)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 13, 11)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    kw = dict(stride=(2, 1), padding=1, groups=2)
    for method in ("jit", "im2col"):
        for _ in range(2):
            out = fastconv.conv2d_forward(x, w, b, method=method, **kw)
            assert_close(out, fastconv.conv2d_forward(x, w, b, method="naive", **kw), dtype, "out")
            dout = np.ones_like(out)
            got = fastconv.conv2d_backward(dout, x, w, method=method, **kw)
            ref = fastconv.conv2d_backward(dout, x, w, method="naive", **kw)
            for name, g, r in zip(("dx", "dw", "db"), got, ref):
                assert_close(g, r, dtype, name)
    for op in ("max_pool2d", "avg_pool2d"):
        fwd, bwd = getattr(fastconv, op + "_forward"), getattr(fastconv, op + "_backward")
        for _ in range(2):
            out = fwd(x, 3, stride=2, padding=1, method="jit")
            assert_close(out, fwd(x, 3, stride=2, padding=1, method="naive"), dtype, "out")
            dout = rng.standard_normal(out.shape).astype(dtype)
            assert_close(bwd(dout, x, 3, stride=2, padding=1, method="jit"),
                         bwd(dout, x, 3, stride=2, padding=1, method="naive"), dtype, "dx")


def test_the_setting():
    """FASTCONV_RECYCLE_MB=0 keeps nothing; a value that is not a number of MiB is an error naming it."""
    res = _run("""
        import numpy as np
        from fastconv import _workspace
        a = _workspace.fresh((9 << 20,), np.float32)
        del a
        print(_workspace.RECYCLE_BYTES, len(_workspace._free))
    """, env={"FASTCONV_RECYCLE_MB": "0"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "0"]
    res = _run("import fastconv", env={"FASTCONV_RECYCLE_MB": "lots"})
    assert res.returncode != 0 and "FASTCONV_RECYCLE_MB must be a number of MiB" in res.stderr
