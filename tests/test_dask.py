"""fastconv.dask on a LocalCluster of 2 worker processes x 1 thread, started and closed here: results
equal the single-process functions (forward and dx bitwise; dw, db within float rounding)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv import nn  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(scope="module")
def client():
    """The cluster, on a free port; the environment restored afterwards (LocalCluster sets
    OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process's environment for its workers, which every later
    subprocess of the test run would inherit)."""
    environ = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
            yield c
    finally:
        os.environ.clear()
        os.environ.update(environ)


def _close(got, ref, dtype):
    scale = max(1.0, float(np.abs(ref).max()))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= TOL[dtype] * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks,method,kw", [
    ((5, 5, 3), "auto", dict(padding=1)),
    ((1, 12), "jit", dict(stride=2, padding="same")),
    ((0, 6, 0, 7), "auto", dict(dilation=2, groups=2)),
    ((4, 4, 4, 1), "im2col", dict(padding=((1, 0), (2, 1)))),
])
def test_conv_equals_single_process(client, dtype, chunks, method, kw):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((13, 4, 11, 10)).astype(dtype)
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    xd = da.from_array(x, chunks=(chunks, -1, -1, -1))
    ref = fastconv.conv2d_forward(x, w, b, method=method, **kw)
    out = fd.conv2d_forward(xd, w, b, method=method, **kw)
    assert out.chunks[0] == chunks and out.dtype == ref.dtype
    np.testing.assert_array_equal(out.compute(), ref)  # bitwise
    dout = rng.standard_normal(ref.shape).astype(dtype)
    rdx, rdw, rdb = fastconv.conv2d_backward(dout, x, w, method=method, **kw)
    dx, dw, db = da.compute(*fd.conv2d_backward(da.from_array(dout, chunks=(3, -1, -1, -1)), xd, w,
                                                 method=method, **kw))
    np.testing.assert_array_equal(dx, rdx)  # bitwise: dout was rechunked as x
    _close(dw, rdw, dtype)
    _close(db, rdb, dtype)


@pytest.mark.parametrize("op,kw", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=2, ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
])
def test_pools_equal_single_process(client, op, kw):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 3, 13, 12)).astype(np.float32)
    xd = da.from_array(x, chunks=((2, 0, 7), -1, -1, -1))
    fwd, bwd = getattr(fastconv, f"{op}_forward"), getattr(fastconv, f"{op}_backward")
    ref = fwd(x, **kw)
    np.testing.assert_array_equal(getattr(fd, f"{op}_forward")(xd, **kw).compute(), ref)
    dout = rng.standard_normal(ref.shape).astype(np.float32)
    got = getattr(fd, f"{op}_backward")(dout, xd, **kw).compute()  # a NumPy dout is chunked as x
    np.testing.assert_array_equal(got, bwd(dout, x, **kw))


def test_weights_are_one_task_not_one_per_chunk():
    x = da.zeros((40, 3, 8, 8), chunks=(4, -1, -1, -1))
    w = np.ones((5, 3, 3, 3))
    out = fd.conv2d_forward(x, w, np.zeros(5))
    graph = dict(out.__dask_graph__())
    holding_w = [k for k, v in graph.items() if isinstance(getattr(v, "value", v), np.ndarray)
                 and getattr(v, "value", v).shape == w.shape]
    assert len(holding_w) == 1


def test_bad_chunking_and_types_are_refused_before_running():
    x = da.zeros((8, 4, 8, 8), chunks=(4, 2, -1, -1))
    how = r"chunked along the batch axis only.*rechunk\(\{1: -1, 2: -1, 3: -1\}\)"
    with pytest.raises(ValueError, match=how):
        fd.conv2d_forward(x, np.ones((2, 4, 3, 3)))
    with pytest.raises(TypeError, match="must be a dask array"):
        fd.max_pool2d_forward(np.zeros((2, 2, 4, 4)), 2)
    good = x.rechunk({1: -1})
    with pytest.raises(ValueError, match="larger than the padded input"):  # the NCHW function's check
        fd.conv2d_forward(good, np.ones((2, 4, 9, 9)))
    with pytest.raises(ValueError, match="batch size"):
        fd.conv2d_backward(da.zeros((7, 2, 6, 6), chunks=(7, -1, -1, -1)), good, np.ones((2, 4, 3, 3)))


def test_configure_workers_sets_each_workers_threads(client):
    assert set(fd.configure_workers(client).values()) == {1}


def test_a_killed_worker_does_not_change_the_result(client):
    """A worker process dies while the graph runs: Dask reruns its tasks elsewhere (the nanny restarts
    the worker), and the result is still the single-process one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    ref = fastconv.conv2d_forward(x, w, padding=1)
    slow = dask.delayed(lambda a: (time.sleep(0.05), a)[1], pure=True)  # 48 x 50 ms of work
    xd = da.concatenate([da.from_delayed(slow(x[i:i + 1]), shape=(1, *x.shape[1:]), dtype=x.dtype)
                         for i in range(len(x))])
    future = client.compute(fd.conv2d_forward(xd, w, padding=1))
    time.sleep(0.4)
    assert not future.done()
    victim = sorted(client.scheduler_info()["workers"])[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    np.testing.assert_array_equal(future.result(timeout=300), ref)
    client.wait_for_workers(2, timeout=120)


def _model(seed: int) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=np.float64), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5, rng=rng, dtype=np.float64))


def test_data_parallel_steps_equal_single_process_training(client):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((11, 3, 8, 8))
    y = rng.integers(0, 5, 11)
    alone, spread = _model(0), _model(0)
    opt_a = nn.SGD(alone.parameters(), lr=0.1, momentum=0.9)
    trainer = fd.DataParallel(client, spread, nn.SGD(spread.parameters(), lr=0.1, momentum=0.9))
    loss_fn = nn.SoftmaxCrossEntropy()
    for _ in range(3):
        loss_a = loss_fn(alone.forward(x), y)
        opt_a.zero_grad()
        alone.backward(loss_fn.backward())
        opt_a.step()
        loss_s = trainer.step(x, y)
        assert abs(loss_a - loss_s) <= 1e-12 * max(1.0, abs(loss_a))
    for (name, a), (_, s) in zip(alone.named_parameters(), spread.named_parameters()):
        np.testing.assert_allclose(s.data, a.data, rtol=1e-12, atol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="same, non-zero number"):
        trainer.step(x, y[:3])


def test_demo_trains_on_workers(client):
    """(With the module's cluster running: the demo's own cluster takes another port.) The demo leaves
    the environment as it found it."""
    pytest.importorskip("sklearn")
    from fastconv import demo

    environ = dict(os.environ)
    lines: list[str] = []
    hist = demo.run(epochs=2, log=lines.append, workers=2)
    assert "on 2 Dask workers" in lines[0] and hist["test_acc"][-1] > 0.9
    assert dict(os.environ) == environ


def test_auto_decides_on_the_dtype_the_call_computes_in(client):
    """float32 x and w with a float64 bias compute in float64 (the NCHW rule): the chunks run auto's
    float64 choice and equal the single-process result bitwise."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16)
    out = fd.conv2d_forward(da.from_array(x, chunks=(2, -1, -1, -1)), w, b, padding=1)
    ref = fastconv.conv2d_forward(x, w, b, padding=1)
    assert out.dtype == ref.dtype == np.float64
    np.testing.assert_array_equal(out.compute(), ref)
