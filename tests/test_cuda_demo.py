"""A small primitive with every kind of tensor and scalar the contract has, and a CUDA kernel
for it, for the CUDA tests (imported as tests.test_cuda_demo): int64 inputs, an inout int64
tensor, a float32 and an int64 output, int32 / int64 / float32 scalars and long long dims.

    gather_demo: y[i] = x[idx[i]] * scale (+ 0.5 when flags & 1), src[i] = idx[i],
                 hits[j] += step for every i with idx[i] == j (in place)

The tests here run it on the CPU emulator through kernels.arguments(), the path every CUDA
kernel takes; test_cuda_backend_fake.py runs it through the backend.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from harness.backends.cuda import kernels as K
from harness.core import catalogue
from harness.core.declaration import F32_EPS, Primitive, Scalar, Tensor, Tolerance
from harness.core.verify import verify


def _reference(x, idx, hits, scale, step, flags):
    y = x[idx] * scale + (0.5 if flags & 1 else 0.0)
    return {"hits": hits + step * np.bincount(idx, minlength=x.shape[0]), "y": y, "src": idx.copy()}


def _numpy(x, idx, hits, scale, step, flags):
    np.add.at(hits, idx, np.int64(step))
    return (x[idx] * scale + np.float32(0.5 if flags & 1 else 0.0)).astype(np.float32), idx.copy()


DEMO = Primitive(
    name="gather_demo", summary="test primitive: gather with a scale, and hit counts in place", order=999,
    dims=("n", "m"),
    tensors=(Tensor("x", ("n",)),
             Tensor("idx", ("m",), dtype="int64", init=lambda shape, rng, d: rng.integers(0, d["n"], size=shape)),
             Tensor("hits", ("n",), role="inout", dtype="int64",
                    init=lambda shape, rng, d: rng.integers(0, 5, size=shape)),
             Tensor("y", ("m",), role="out", tolerance=Tolerance(atol=1e-7, rtol=2 * F32_EPS)),
             Tensor("src", ("m",), role="out", dtype="int64")),
    scalars=(Scalar("scale", "float32", 2.0), Scalar("step", "int64", 3), Scalar("flags", "int32", 0)),
    reference=_reference, numpy=_numpy,
    flops=lambda d: d["m"], size_to_dims=lambda n: (n, n), ladder=(64,), quick_ladder=(64,), gpu_ladder=(64,),
    check_dims=((1, 1), (5, 7), (129, 1000)), distributions=("normal",))

DEMO_SOURCE = r'''// gather_demo.cu - a test kernel using every kind of parameter.
#define THREADS 128

// launch: grid=cdiv(m, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
gather_demo_naive(float* __restrict__ y, const float* __restrict__ x, long long m, long long n,
                  const long long* __restrict__ idx, long long* hits, long long* src,
                  float scale, long long step, int flags)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m) return;
    long long j = idx[i];
    y[i] = x[j] * scale + ((flags & 1) ? 0.5f : 0.0f);
    src[i] = j;
    atomicAdd(reinterpret_cast<unsigned long long*>(hits + j), (unsigned long long)step);
}
'''


@pytest.fixture
def demo(monkeypatch, tmp_path):
    """gather_demo declared, and a kernel folder holding its .cu (plus the real add.cu)."""
    (tmp_path / "gather_demo.cu").write_text(DEMO_SOURCE)
    shutil.copy(K.SOURCE_DIR / "add.cu", tmp_path / "add.cu")
    monkeypatch.setitem(catalogue.PRIMITIVES, DEMO.name, DEMO)
    monkeypatch.setattr(K, "SOURCE_DIR", tmp_path)
    return DEMO


def run_demo_on_emulator(inputs: dict, dims, scalars=None) -> dict:
    from tests.cuda_emu import run_kernel
    spec = K.spec(DEMO.name, "naive").only()
    lc = K.launch(spec, dims)
    arrays = {n: np.array(a, copy=True) for n, a in inputs.items()}       # inout is updated in place
    for t in DEMO.tensors:
        if t.role == "out":
            arrays[t.name] = np.full(DEMO.shape_of(t, dims), np.nan if t.dtype == "float32" else -1,
                                     dtype=t.np_dtype)
    run_kernel(spec.source, spec.kernel, lc.grid, lc.block, lc.shared_bytes,
               K.arguments(spec, DEMO, arrays, dims, scalars))
    return {t.name: arrays[t.name] for t in DEMO.outputs}


def test_the_demo_spec_binds_by_name_whatever_the_parameter_order(demo):
    spec = K.spec("gather_demo", "naive")
    assert K.variants("gather_demo") == ["naive"]
    args = K.arguments(spec, demo, {"x": "X", "idx": "I", "hits": "H", "y": "Y", "src": "S"}, (10, 20),
                       {"flags": 1})
    assert args[:2] == ["Y", "X"] and args[4:7] == ["I", "H", "S"]
    assert [type(a) for a in args[2:4] + args[7:]] == [np.int64, np.int64, np.float32, np.int64, np.int32]
    assert args[2] == 20 and args[3] == 10 and args[7] == np.float32(2.0) and args[8] == 3 and args[9] == 1
    # long long dims: the int32 limits do not apply.
    assert K.limit(spec, (2**31 + 5, 2**31 + 5)) is None


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
@pytest.mark.parametrize("flags", [0, 1])
def test_the_demo_kernel_verifies_every_output_on_the_emulator(demo, flags):
    for dims in demo.check_dims:
        inputs = demo.make_inputs(dims, "normal", 0)
        outs = run_demo_on_emulator(inputs, dims, {"flags": flags})
        v = verify(demo, inputs, outs, dims, scalars={"flags": flags})
        assert v.ok, f"{dims}: {v.message}"
        assert set(v.outputs) == {"hits", "y", "src"}
