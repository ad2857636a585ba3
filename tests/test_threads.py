"""Thread counts, determinism across them, and calls from many Python threads at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from tables import assert_close, fast_methods

import fastconv

numba = pytest.importorskip("numba")
MAX_THREADS = int(numba.config.NUMBA_NUM_THREADS)


@pytest.fixture
def restore_threads():
    yield
    fastconv.set_num_threads(MAX_THREADS)


def _calls(rng, dtype):
    """One call of every op, forward and backward, with overlapping windows and padding."""
    x = rng.standard_normal((3, 6, 11, 10)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    conv = dict(stride=(2, 1), padding=1, groups=2)
    dconv = rng.standard_normal((3, 8, 6, 10)).astype(dtype)
    pool = dict(kernel_size=3, stride=2, padding=1)
    dpool = rng.standard_normal((3, 6, 6, 5)).astype(dtype)
    # one input channel and enough images for the jit dw kernel to split the batch into chunks
    x1 = rng.standard_normal((40, 1, 40, 40)).astype(dtype)
    w1 = rng.standard_normal((6, 1, 5, 5)).astype(dtype)
    d1 = rng.standard_normal((40, 6, 36, 36)).astype(dtype)
    # 16 input channels (the jit dw's channel tiles) and rows long enough for im2col's stacked GEMMs
    x2 = rng.standard_normal((4, 16, 20, 20)).astype(dtype)
    w2 = rng.standard_normal((20, 16, 3, 3)).astype(dtype)
    d2 = rng.standard_normal((4, 20, 20, 20)).astype(dtype)
    # a pointwise conv with 3 blocks of 16 input channels (the jit dw's per-task transposes)
    x3 = rng.standard_normal((5, 40, 3, 5)).astype(dtype)
    w3 = rng.standard_normal((12, 40, 1, 1)).astype(dtype)
    d3 = rng.standard_normal((5, 12, 3, 5)).astype(dtype)
    return {
        "conv2d": lambda m: (fastconv.conv2d_forward(x, w, b, method=m, **conv),
                             *fastconv.conv2d_backward(dconv, x, w, method=m, **conv),
                             *fastconv.conv2d_backward(d1, x1, w1, method=m),
                             fastconv.conv2d_forward(x2, w2, method=m, padding=1),
                             *fastconv.conv2d_backward(d2, x2, w2, method=m, padding=1),
                             *fastconv.conv2d_backward(d3, x3, w3, method=m)),
        "max_pool2d": lambda m: (fastconv.max_pool2d_forward(x, method=m, **pool),
                                 fastconv.max_pool2d_backward(dpool, x, method=m, **pool)),
        "avg_pool2d": lambda m: (fastconv.avg_pool2d_forward(x, method=m, **pool),
                                 fastconv.avg_pool2d_backward(dpool, x, method=m, **pool)),
    }


OP_METHODS = [(op, m) for op in fastconv.OPS for m in fast_methods(op)]


def _blas_gemm_is_bitwise_across_threads(dtype) -> bool:
    """Whether this BLAS's GEMM gives the same bits on 1 thread and on all of them, on shapes like
    im2col's. Not every build does: NumPy's OpenBLAS 0.3.31 with its Haswell kernels (an AVX2 Zen 1)
    differs in the last bits for (5, 30) @ (30, 16000) and (64, 576) @ (576, 1024)."""
    from threadpoolctl import threadpool_limits

    r = np.random.default_rng(0)
    for m, k, n in ((5, 30, 16000), (64, 576, 1024)):
        a, b = r.standard_normal((m, k)).astype(dtype), r.standard_normal((k, n)).astype(dtype)
        with threadpool_limits(1, user_api="blas"):
            one = a @ b
        with threadpool_limits(MAX_THREADS, user_api="blas"):
            many = a @ b
        if not np.array_equal(one, many):
            return False
    return True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op,method", OP_METHODS)
def test_bitwise_identical_for_any_thread_count(op, method, dtype, rng, restore_threads):
    """The numba kernels' results do not depend on the thread count, bitwise. Methods that call BLAS
    (im2col, and auto where it picks im2col) are exactly as thread-count-independent as the BLAS's own
    GEMM: bitwise where it is, else within the dtype's tolerance (and still bitwise across repeated
    calls on one thread count)."""
    call = _calls(rng, dtype)[op]
    results = {}
    for n in sorted({1, MAX_THREADS}):
        fastconv.set_num_threads(n)
        assert fastconv.get_num_threads() == n
        results[n] = call(method)
        for a, b in zip(results[n], call(method)):  # repeated calls: bitwise, whatever the BLAS
            np.testing.assert_array_equal(a, b)
    uses_blas = op == "conv2d" and method in ("im2col", "auto")
    bitwise = not uses_blas or _blas_gemm_is_bitwise_across_threads(dtype)
    for a, b in zip(results[1], results[MAX_THREADS]):
        if bitwise:
            np.testing.assert_array_equal(a, b)
        else:
            assert_close(a, b, dtype, "1 thread against all")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("claimed_threads", [1, 3, 7])
def test_results_do_not_depend_on_how_tasks_are_claimed(claimed_threads, dtype, rng, monkeypatch):
    """The kernels run one loop iteration per thread, each claiming runs of tasks from its own share and
    then from the others'. With counters for another number of shares than threads (a thread then runs
    several iterations, or one thread drains every share), and with several dw tasks per thread, every
    call gives bitwise the results of the normal schedule: every task is claimed exactly once, whoever
    claims it."""
    import sys

    import fastconv.im2col.conv  # noqa: F401  (every kernel module imported, so each is patched)
    import fastconv.jit.conv
    import fastconv.jit.pool  # noqa: F401
    from fastconv.jit import _numba
    from fastconv.jit.conv.tunables import TUNABLES

    calls = _calls(rng, dtype)
    expected = {op: {m: calls[op](m) for m in fast_methods(op)} for op in calls}

    def skewed():  # counters for claimed_threads shares, however many threads run
        ctr = np.zeros(_numba.SLOT * (claimed_threads + 1), np.int64)
        ctr[1] = claimed_threads
        return ctr

    patched = [module for name, module in list(sys.modules.items())
               if name.startswith(("fastconv.jit.", "fastconv.im2col.")) and getattr(module, "counter", None)
               is _numba.counter]
    assert len(patched) >= 8
    for module in patched:
        monkeypatch.setattr(module, "counter", skewed)
    monkeypatch.setattr(TUNABLES, "dw_tasks_per_thread", 3)
    for op, by_method in expected.items():
        for method, results in by_method.items():
            for a, b in zip(results, calls[op](method)):
                np.testing.assert_array_equal(a, b)


def test_set_num_threads_validates(restore_threads):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            fastconv.set_num_threads(bad)
    with pytest.raises(ValueError, match="at most"):
        fastconv.set_num_threads(MAX_THREADS + 1)


def test_set_num_threads_sets_blas_too(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastconv.set_num_threads(1)
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_many_python_threads_at_once(rng):
    """Eight threads, mixed ops and methods, each checked against results computed serially."""
    calls = {dt: _calls(np.random.default_rng(5), dt) for dt in (np.float32, np.float64)}
    jobs = [(dt, op, m) for dt in calls for op, m in OP_METHODS]
    expected = {job: calls[job[0]][job[1]](job[2]) for job in jobs}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(6):
                job = jobs[(k + i) % len(jobs)]
                got = calls[job[0]][job[1]](job[2])
                for a, b in zip(got, expected[job]):
                    np.testing.assert_array_equal(a, b)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert numba.threading_layer() in ("omp", "tbb", "workqueue")  # each layer: test_processes.py


BLAS_RESTART_PROBE = """
import ctypes, os
import numpy as np
from threadpoolctl import threadpool_info
pools = [p for p in threadpool_info()
         if p["internal_api"] == "openblas" and p["threading_layer"] == "pthreads"]
if not pools:
    print("no pthreads OpenBLAS")
    raise SystemExit(0)
a = np.ones((400, 400))
a @ a  # the pool is running
before = set(os.listdir("/proc/self/task"))
import fastconv
after = set(os.listdir("/proc/self/task"))
lib = ctypes.CDLL(pools[0]["filepath"])
if not hasattr(lib, "openblas_thread_timeout"):  # OpenBLAS 0.3.34 in NumPy 2.5 exports no pool entry points
    assert not fastconv.BLAS_SLEEPS_AT_ONCE  # then fastconv says it could not restart the pool
    print("no entry points")
    raise SystemExit(0)
lib.openblas_thread_timeout.restype = ctypes.c_uint
assert fastconv.BLAS_SLEEPS_AT_ONCE
assert lib.openblas_thread_timeout() == 4, lib.openblas_thread_timeout()
workers = before - {str(os.getpid())}
assert workers and not workers & after, (before, after)  # the old, spinning workers are gone
assert np.array_equal(a @ a, np.full((400, 400), 400.0))  # the new pool computes
print("restarted", len(workers))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_openblas_pool_restarted_when_numpy_came_first():
    """With NumPy imported first, fastconv restarts OpenBLAS's thread pool so that its idle workers take
    OPENBLAS_THREAD_TIMEOUT (else they spin ~0.1 s after each GEMM, slowing the numba kernels after it)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    res = subprocess.run([sys.executable, "-c", BLAS_RESTART_PROBE], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(("restarted", "no pthreads", "no entry points")), res.stdout
