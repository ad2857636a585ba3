"""Memory, disk cache and install robustness (threads and determinism are in test_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv.im2col import conv as im2col_conv


def _run(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -------------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_im2col_memory_bound(direction, monkeypatch):
    """Scratch memory beyond inputs and results stays within max(budget, inputs + outputs)."""
    monkeypatch.setattr(im2col_conv, "MIN_BUDGET", 1 << 20)  # 1 MiB: forces several chunks
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((16, 16, 20, 20)).astype(np.float32)
    kw = dict(padding=1, method="im2col")
    fastconv.conv2d_backward(dout, x, w, **kw)  # compile outside the measurement
    fastconv.release_workspace()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        if direction == "forward":
            out = fastconv.conv2d_forward(x, w, **kw)
            results = out.nbytes
            fixed = x.nbytes + out.nbytes
        else:
            res = fastconv.conv2d_backward(dout, x, w, **kw)
            results = sum(a.nbytes for a in res)
            fixed = x.nbytes + dout.nbytes + res[0].nbytes + w.nbytes
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        fastconv.release_workspace()
    unfolded = 8 * 9 * 16 * 400 * 4  # what an unchunked im2col would hold: 1.8 MiB
    extra = peak - results
    assert extra <= max(1 << 20, fixed) + (64 << 10), f"extra {extra} bytes"
    assert extra < unfolded + fixed  # chunking happened


def test_buffers_and_results_start_on_cache_lines():
    """Scratch buffers, each thread's row of them, and the jit/im2col results start on 64-byte
    boundaries (NumPy's own allocations are only 16-byte aligned: a packed panel 16 bytes off splits
    every other vector load across two cache lines)."""
    from fastconv import _workspace
    from fastconv.jit.conv.packing import thread_rows

    fastconv.release_workspace()
    try:
        for i, size in enumerate([1, 7, 13, 1000, 4099, (1 << 20) + 3]):
            for dtype in (np.float32, np.float64, np.int64):
                a = _workspace.aligned_empty(size, dtype)
                assert a.ctypes.data % 64 == 0 and a.shape == (size,) and a.dtype == dtype
                assert a.flags.c_contiguous and a.flags.writeable
                a[:] = 1  # the whole extent is usable
                s = _workspace.scratch(f"t{i}", size, dtype)
                assert s.ctypes.data % 64 == 0 and s.shape == (size,) and s.dtype == dtype
                if dtype != np.int64:  # results are float (the suite fills them with NaN)
                    r = _workspace.fresh((size, 3), dtype)
                    assert r.ctypes.data % 64 == 0 and r.shape == (size, 3) and r.dtype == dtype
                rows = thread_rows(f"r{i}", size, dtype)
                assert rows.shape[1] >= size
                assert all(rows[t].ctypes.data % 64 == 0 for t in range(rows.shape[0]))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 9, 9))
        w = rng.standard_normal((4, 3, 3, 3))
        for method in ("jit", "im2col"):
            for _ in range(5):
                out = fastconv.conv2d_forward(x, w, method=method)
                assert out.ctypes.data % 64 == 0
    finally:
        fastconv.release_workspace()


def test_no_growth_over_many_calls():
    """Traced memory does not grow over 600 rounds of every op and method, once it has settled.

    Run in a fresh interpreter, away from pytest's own bookkeeping. CPython's allocator caches grow to a
    bounded size as calls go on (its freelists keep up to 2000 freed tuples of each size, which
    tracemalloc counts): 1-3 KB over the first 600 traced rounds on Python 3.11-3.13, about 57 KB on
    3.10, then no more. So the 600 rounds measured follow 600 traced rounds that let those caches fill;
    a leak of one 64-byte object per round (38 KB) would still exceed the bound."""
    res = _run("""
        import tracemalloc
        import numpy as np, fastconv
        rng = np.random.default_rng(1)
        x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
        w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
        kw = dict(groups=2, stride=2, padding=1)

        def calls():
            for method in ("jit", "im2col", "auto"):
                out = fastconv.conv2d_forward(x, w, method=method, **kw)
                fastconv.conv2d_backward(out, x, w, method=method, **kw)
            for op in ("max_pool2d", "avg_pool2d"):
                for method in ("jit", "auto"):
                    out = getattr(fastconv, op + "_forward")(x, 3, stride=2, padding=1, method=method)
                    getattr(fastconv, op + "_backward")(out, x, 3, stride=2, padding=1, method=method)

        for _ in range(50):
            calls()
        tracemalloc.start()
        for _ in range(600):
            calls()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(600):
            calls()
        print(tracemalloc.get_traced_memory()[0] - before)
    """)
    assert res.returncode == 0, res.stderr
    growth = int(res.stdout)
    assert growth < 32 << 10, f"grew by {growth} bytes over 600 rounds"


# ------------------------------------------------------------------------------------ disk cache
CACHE_PROBE = """
    import numpy as np, fastconv
    from fastconv.jit import pool
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = fastconv.max_pool2d_forward(x, 2, method="jit")
    assert out.shape == (2, 3, 4, 4)
    stats = pool._fwd.stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_disk_cache_concurrent_compiles_then_reuse_until_sources_change(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CACHE_PROBE)], env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    again = _run(CACHE_PROBE, env)
    assert again.returncode == 0, again.stderr
    hits, misses = map(int, again.stdout.split())
    assert hits >= 1 and misses == 0  # loaded from disk, not compiled
    # With any kernel source changed (here as if an intrinsic in _numba.py had), the kernels whose own
    # files are unchanged are compiled again, not loaded stale.
    edited = _run("import fastconv.jit._cache as nb; nb.KERNEL_SOURCES_HASH = b'edited'\n"
                  + textwrap.dedent(CACHE_PROBE), env)
    assert edited.returncode == 0, edited.stderr
    hits, misses = map(int, edited.stdout.split())
    assert hits == 0 and misses >= 1


def test_kernel_sources_hash_follows_every_file(tmp_path):
    """The disk cache's extra stamp: any file's text changes it; a file that cannot be read (a zipped
    install) counts by its name instead of failing the import."""
    pytest.importorskip("numba")
    from fastconv.jit._cache import KERNEL_SOURCES_HASH, sources_hash

    files = [tmp_path / "a.py", tmp_path / "b.py"]
    for f in files:
        f.write_text("x = 1\n")
    before = sources_hash(files)
    files[1].write_text("x = 2\n")
    assert sources_hash(files) != before
    assert sources_hash(files + [tmp_path / "missing.py"]) != sources_hash(files)
    assert len(KERNEL_SOURCES_HASH) == 32


def test_cache_can_be_turned_off(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "FASTCONV_CACHE": "0"}
    res = _run(CACHE_PROBE, env)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.nbi"))


NOTE = "fastconv: compiling kernels for this CPU"


@pytest.mark.parametrize("var", ["FASTCONV_CACHE_DIR", "NUMBA_CACHE_DIR"])
def test_unusable_cache_dir_one_note_no_error_under_w_error(tmp_path, var):
    """A cache directory that cannot be created: the kernels still compute, under -W error too, and the
    process says once (not once per kernel) what to set."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = textwrap.dedent(CACHE_PROBE) + "fastconv.max_pool2d_backward(out, x, 2, method='jit')\n"
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, var: str(blocker / "cache"), "FASTCONV_QUIET": "0"})
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if line.startswith("fastconv")]
    assert len(notes) == 1 and NOTE in notes[0], res.stderr
    assert f"set {var} to a writable directory" in notes[0]
    assert "Warning" not in res.stderr


def test_compile_note_once_when_compiling_not_when_loading(tmp_path):
    env = {"FASTCONV_CACHE_DIR": str(tmp_path / "cache"), "FASTCONV_QUIET": "0"}
    first, second = _run(CACHE_PROBE, env), _run(CACHE_PROBE, env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stderr.count(NOTE) == 1 and str(tmp_path / "cache") in first.stderr
    assert first.stdout.split()[1] != "0"  # compiled
    assert NOTE not in second.stderr and second.stdout.split() == ["1", "0"]  # loaded, silently
    quiet = _run(CACHE_PROBE, {**env, "FASTCONV_CACHE_DIR": str(tmp_path / "other"), "FASTCONV_QUIET": "1"})
    assert quiet.returncode == 0 and NOTE not in quiet.stderr


def test_read_only_install_reads_its_own_cache_then_the_users(tmp_path):
    """An install whose directory cannot be written (as for most users of a shared environment): kernels
    precompiled into it are loaded from it; a kernel it does not hold compiles into the user's cache
    directory, which `fastconv info` names. (Run as root, the test cannot take write access away: it
    tells fastconv's probe that the install is read-only. The kernel the install cannot hold is one
    defined outside it, in this test's folder.)"""
    warm = _run(CACHE_PROBE, {"NUMBA_CACHE_DIR": "", "FASTCONV_CACHE_DIR": ""})  # in the install's cache
    assert warm.returncode == 0, warm.stderr
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "probe_kernels.py").write_text(textwrap.dedent("""
        from numba import prange
        from fastconv.jit._numba import kernel

        @kernel
        def probe_double(a, out):
            for i in prange(a.shape[0]):
                out[i] = 2 * a[i]
    """))
    read_only = """
        import sys
        import fastconv.jit._cache as c
        writable = c._writable
        c._writable = lambda path: not str(path).startswith(str(c._PACKAGE)) and writable(path)
    """
    env = {"NUMBA_CACHE_DIR": "", "FASTCONV_CACHE_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(tmp_path / "mod")}
    res = _run(textwrap.dedent(read_only) + textwrap.dedent(CACHE_PROBE) + textwrap.dedent("""
        from probe_kernels import probe_double
        out = np.empty(5)
        probe_double(np.arange(5.0), out)
        assert out.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
        from fastconv.jit._cache import location
        print(location().describe())
    """), env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "1 0"  # the max-pool kernel: loaded from the install's cache
    user = tmp_path / "home" / "fastconv"
    assert str(user) in lines[1] and "read-only" in lines[1]
    assert [p.name for p in user.rglob("*.nbi")] == [next(user.rglob("*probe_double*.nbi")).name]



def test_nothing_compiles_at_import():
    res = _run("""
        import sys, fastconv
        assert "numba" not in sys.modules, "import fastconv loaded numba"
        print("ok")
    """)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ----------------------------------------------------------------------------------- broken numba
def test_without_numba_naive_still_works():
    res = _run("""
        import sys
        sys.modules["numba"] = None  # as if numba were missing or failed to import
        import numpy as np, fastconv
        assert fastconv.available_methods("conv2d") == ("naive",)
        x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
        assert fastconv.conv2d_forward(x, w).sum() == 16  # auto falls back to naive
        try:
            fastconv.conv2d_forward(x, w, method="jit")
        except ImportError as exc:
            assert "method='naive' works without it" in str(exc), exc
        else:
            raise AssertionError("no error")
        print("ok")
    """)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
