"""Where users' programs run fastconv: forked worker processes (multiprocessing, every start method),
every numba threading layer with many Python threads at once, and big-endian inputs.

Each scenario runs in a fresh interpreter (a subprocess), since numba's threading layer is fixed at a
process's first parallel call and a fork test must start from a parent that has already computed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tables import DTYPES

import fastconv

numba = pytest.importorskip("numba")
from fastconv.jit import _threading  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))

# Every op and method (auto included), forward and backward, on small arrays of both dtypes. Each
# worker returns its results; the parent compares them bitwise with its own (same code, same thread
# count: the kernels' results do not depend on the schedule).
# Each worker computes every op and method and returns its results; the parent compares them bitwise
# with its own (same code, same thread count: the kernels' results do not depend on the schedule).
WORK = """
import multiprocessing as mp, threading
import numpy as np
from _workers import everything, same
"""

FORK = WORK + """
if __name__ != "__main__":  # a spawned worker re-imports this script
    raise SystemExit
expected = everything()  # the parent computes first: its threading layer is running when it forks
for method in ("fork", "forkserver", "spawn"):
    if method not in mp.get_all_start_methods():
        continue
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map(everything, range(3), chunksize=1)
    for r in results:
        differ = [(i, float(np.nanmax(np.abs(a - b))), float(np.nanmax(np.abs(b))))
                  for i, (a, b) in enumerate(zip(r, expected)) if not same([a], [b])]
        assert len(r) == len(expected) and not differ, (method, differ)  # (index, max diff, max |value|)
    p = ctx.Process(target=everything)
    p.start()
    p.join(600)
    assert p.exitcode == 0, (method, p.exitcode)
    print(method, "ok")
import numba
print("layer", numba.threading_layer())
"""

THREADS = WORK + """
expected = everything()
errors = []

def worker():
    try:
        for _ in range(2):
            assert same(everything(), expected)
    except BaseException as exc:
        errors.append(exc)

threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors[0]
import numba
print("layer", numba.threading_layer())
"""


def _run(script: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter that can import this folder's modules (spawned workers too)."""
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = TESTS + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout, env=full)


def _tbb_loads() -> bool:
    try:
        from numba.np.ufunc.parallel import _check_tbb_version_compatible

        _check_tbb_version_compatible()
        from numba.np.ufunc import tbbpool  # noqa: F401
    except Exception:
        return False
    return True


def test_forked_spawned_and_forkserver_workers_compute_every_op():
    """A parent that has run every op forks workers (a Pool and a Process, with each start method):
    each computes every op and method and gets the parent's results, bitwise; nothing is killed or
    hangs. Under numba's GNU OpenMP layer (today's default before this test existed) the forked child
    was killed with SIGTERM and a fork Pool hung."""
    res = _run(FORK)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fork ok" in res.stdout, res.stdout
    layer = res.stdout.split("layer")[-1].strip()
    assert _threading.safety(layer)[1], layer  # omp here only with a fork-safe runtime


LAYERS = ["workqueue", "omp", "tbb"]


@pytest.mark.parametrize("layer", LAYERS)
def test_many_python_threads_under_each_threading_layer(layer):
    """Four Python threads calling every op and method at once, under each layer numba can run here:
    workqueue (not thread-safe: fastconv serializes its launches, else the process aborts), omp, tbb."""
    if layer == "tbb" and not _tbb_loads():
        pytest.skip("numba cannot load TBB here")
    if layer == "omp":
        try:
            from numba.np.ufunc import omppool  # noqa: F401
        except ImportError:
            pytest.skip("numba has no OpenMP layer here")
    res = _run(THREADS, {"NUMBA_THREADING_LAYER": layer})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("layer")[-1].strip() == layer, res.stdout


GNU_OMP_FORK = WORK + """
import numba
from numba.np.ufunc import omppool
everything()
if numba.threading_layer() != "omp" or omppool.openmp_vendor != "GNU":
    print("not GNU OpenMP")
    raise SystemExit(0)

def child(q):
    try:
        everything()
    except RuntimeError as exc:
        q.put(str(exc))
    else:
        q.put("computed")

ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
print(q.get(timeout=600))
p.join(60)
print("exit", p.exitcode)
"""


def test_gnu_openmp_fork_raises_a_clear_error():
    """Under the omp layer with GNU OpenMP (a user's explicit choice), a forked child cannot run parallel
    code: fastconv raises a RuntimeError naming what to do instead of numba killing the child."""
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        pytest.skip("numba has no OpenMP layer here")
    res = _run(GNU_OMP_FORK, {"NUMBA_THREADING_LAYER": "omp"})
    assert res.returncode == 0, res.stderr[-3000:]
    if "not GNU OpenMP" in res.stdout:
        pytest.skip("the OpenMP runtime here is fork-safe")
    assert "start method" in res.stdout and "NUMBA_THREADING_LAYER" in res.stdout, res.stdout
    assert "exit 0" in res.stdout, res.stdout


def test_a_user_chosen_layer_is_kept():
    """fastconv asks for numba's fork-safe selection only when the user chose no layer."""
    res = _run("import fastconv.jit._threading as t, numba; print(t.CHOICE, numba.config.THREADING_LAYER)",
               {"NUMBA_THREADING_LAYER": "workqueue"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "workqueue" and "user" in res.stdout, res.stdout
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    res = subprocess.run([sys.executable, "-c", "import fastconv.jit._threading as t, numba; "
                          "print(t.CHOICE, numba.config.THREADING_LAYER)"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "forksafe", res.stdout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["naive", "jit", "im2col", "auto"])
def test_big_endian_inputs_give_the_native_results(method, dtype, rng):
    """Big-endian float32/float64 arrays (FITS files, network byte order) are the same numbers: every op
    gives the results of the native-order arrays, bitwise, in the native dtype."""
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    big = {name: a.astype(a.dtype.newbyteorder(">")) for name, a in dict(x=x, w=w, b=b).items()}
    assert not big["x"].dtype.isnative or sys.byteorder == "big"
    out = fastconv.conv2d_forward(x, w, b, method=method, padding=1)
    dout = rng.standard_normal(out.shape).astype(dtype)
    pairs = [(out, fastconv.conv2d_forward(big["x"], big["w"], big["b"], method=method, padding=1))]
    pairs += zip(fastconv.conv2d_backward(dout, x, w, method=method, padding=1),
                 fastconv.conv2d_backward(dout.astype(dout.dtype.newbyteorder(">")), big["x"], big["w"],
                                          method=method, padding=1))
    for op in ("max_pool2d", "avg_pool2d"):
        if method not in fastconv.available_methods(op) + ("auto",):
            continue  # im2col has no pools
        fwd, bwd = getattr(fastconv, f"{op}_forward"), getattr(fastconv, f"{op}_backward")
        pooled = fwd(x, 3, stride=2, padding=1, method=method)
        dp = rng.standard_normal(pooled.shape).astype(dtype)
        pairs.append((pooled, fwd(big["x"], 3, stride=2, padding=1, method=method)))
        pairs.append((bwd(dp, x, 3, stride=2, padding=1, method=method),
                      bwd(dp.astype(dp.dtype.newbyteorder(">")), big["x"], 3, stride=2, padding=1,
                          method=method)))
    for native, from_big in pairs:
        assert from_big.dtype == np.dtype(dtype) and from_big.dtype.isnative
        np.testing.assert_array_equal(from_big, native)


def test_big_endian_inputs_of_the_layers_around_conv(rng):
    """affine and ReLU take big-endian float arrays too, in their native dtype."""
    from fastconv import layers

    x = rng.standard_normal((3, 5)).astype(np.float32)
    w = rng.standard_normal((5, 2)).astype(np.float32)
    b = np.zeros(2, np.float32)
    be = [a.astype(a.dtype.newbyteorder(">")) for a in (x, w, b)]
    out, _ = layers.affine_forward(*be)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, layers.affine_forward(x, w, b)[0])
    np.testing.assert_array_equal(layers.relu_forward(be[0])[0], layers.relu_forward(x)[0])
