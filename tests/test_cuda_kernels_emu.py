"""Every CUDA kernel variant, run on the CPU emulator (tests/cuda_emu), verified against the
catalogue's float64 reference - the main evidence that the kernels are right on a machine
without a GPU.

Each case uses the real backend's launch geometry (cuda_impl/launch.py, with an H200's SM
count), the catalogue's check dims (odd, non-square, not multiples of any tile) and every
distribution the catalogue declares for the primitive (outliers, large offsets, constant
rows, ...). The output buffer starts as NaN, so an element no thread writes fails.
The emulator runs warps as fibers with real __syncthreads / shuffle semantics and guard
pages around every buffer, so a missing barrier or an out-of-bounds access fails here too.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from cuda_impl import launch as L
from harness import catalogue
from harness.verify import verify

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")

SEED = 0


def run_on_emulator(primitive: str, variant: str, inputs: dict, dims, sm_count: int = L.DEFAULT_SM_COUNT,
                    pointer_offset: int = 0) -> np.ndarray:
    """Launch one variant exactly as the backend would; return the output array."""
    from tests.cuda_emu import run_kernel

    prim = catalogue.PRIMITIVES[primitive]
    lc = L.launch(primitive, variant, dims, sm_count)
    out = np.full(prim.output_shape(dims), np.nan, dtype=np.float32)
    args = [*inputs.values(), out, *(np.int32(s) for s in lc.scalars)]
    run_kernel(L.source(primitive), lc.kernel, lc.grid, lc.block, lc.shared_bytes, args)
    return out


def _check(primitive, variant, dims, distributions, **kw):
    prim = catalogue.PRIMITIVES[primitive]
    failures = []
    for dist in distributions:
        inputs = prim.make_inputs(dims, dist, SEED)
        v = verify(prim, inputs, run_on_emulator(primitive, variant, inputs, dims, **kw), dims)
        if not v.ok:
            failures.append(f"{dist}: {v.message}")
    assert not failures, f"{primitive}/{variant} at {dims}:\n" + "\n".join(failures)


def _cases(primitive, extra_dims=()):
    prim = catalogue.PRIMITIVES[primitive]
    return [pytest.param(primitive, v, dims, id=f"{primitive}-{v}-{prim.shape_label(dims)}")
            for v in L.variants(primitive) for dims in (*prim.check_dims, *extra_dims)]


@pytest.mark.parametrize("primitive,variant,dims",
                         _cases("add") + _cases("relu") + _cases("gelu") + _cases("softmax") + _cases("layernorm"))
def test_variant_verifies_on_emulator(primitive, variant, dims):
    _check(primitive, variant, dims, catalogue.PRIMITIVES[primitive].distributions)


# Long rows, vectorised (cols % 4 == 0): many float4s per thread, and block_registers at a
# 512-thread block and at its widest, 1024 threads x 32 values.
LONG_ROWS = ((4, 16384), (2, 32768))


@pytest.mark.parametrize("primitive,variant,dims", [
    pytest.param(p, v, d, id=f"{p}-{v}-{d[0]}x{d[1]}")
    for p in ("softmax", "layernorm") for v in L.variants(p) for d in LONG_ROWS])
def test_long_rows_verify_on_emulator(primitive, variant, dims):
    _check(primitive, variant, dims, ("normal", "large_offset"))


# Matmul: the catalogue's check dims, plus tile-edge cases where the float4 paths are live:
# K and N multiples of 4 but M, N not multiples of any tile (vector loads with partial tiles),
# K % 4 == 0 with N % 4 != 0 (vector A loads, scalar B loads and C stores), and a long K
# on the vector path (many BK steps through shared memory).
MATMUL_EXTRA = ((200, 132, 260), (130, 68, 129), (65, 1000, 132))


@pytest.mark.parametrize("primitive,variant,dims", _cases("matmul", MATMUL_EXTRA))
def test_matmul_variant_verifies_on_emulator(primitive, variant, dims):
    _check(primitive, variant, dims, catalogue.PRIMITIVES[primitive].distributions)


@pytest.mark.parametrize("primitive", ["add", "relu", "gelu"])
@pytest.mark.parametrize("variant", ["grid_stride", "vec4"])
def test_grid_stride_loops_cover_arrays_larger_than_the_grid(primitive, variant):
    """With the H200's SM count the check sizes fit in one pass of the grid; a 1-SM grid
    (8 blocks of 256) makes every thread go round its loop several times."""
    n = 3 * 8 * 256 * 4 + 3                  # > 3 passes even for vec4, and n % 4 == 3
    _check(primitive, variant, (n,), ("normal",), sm_count=1)


@pytest.mark.parametrize("primitive", ["add", "relu", "gelu"])
def test_vec4_falls_back_to_scalar_for_unaligned_pointers(primitive):
    """cuMemAlloc'd buffers are 256-byte aligned, but the kernel must not fault (misaligned
    float4) or skip elements when handed pointers 4 bytes into a buffer: a wrapper kernel
    calls it with every pointer shifted by one float."""
    from tests.cuda_emu import run_kernel

    prim = catalogue.PRIMITIVES[primitive]
    n = 1001
    inputs = prim.make_inputs((n + 1,), "normal", SEED)
    names = list(inputs)
    params = ", ".join(f"const float* {k}" for k in names)
    shifted = ", ".join(f"{k} + 1" for k in names)
    wrapper = (f'\nextern "C" __global__ void __launch_bounds__(256) shifted_vec4({params}, float* out, int n)\n'
               f"{{ {primitive}_vec4({shifted}, out + 1, n - 1); }}\n")
    out = np.full(n + 1, np.nan, dtype=np.float32)
    lc = L.launch(primitive, "vec4", (n,))
    run_kernel(L.source(primitive) + wrapper, "shifted_vec4", lc.grid, lc.block, 0,
               [*inputs.values(), out, np.int32(n + 1)])
    assert np.isnan(out[0]), "wrote before the shifted output pointer"
    expect = prim.reference_output({k: a[1:] for k, a in inputs.items()})
    v = verify(prim, {k: a[1:] for k, a in inputs.items()}, out[1:], (n,), ref=expect)
    assert v.ok, v.message


@pytest.mark.parametrize("primitive,variant", [("softmax", "block_registers"), ("layernorm", "block_registers")])
def test_registers_variant_at_its_widest_block(primitive, variant):
    """block_registers sizes its block from cols; at 4100 cols (not a multiple of 4: scalar
    slots) the block is 160 threads, not a power of two, and every slot of every thread is used."""
    dims = (3, 4100)
    assert L.launch(primitive, variant, dims).block[0] == 160
    _check(primitive, variant, dims, ("normal", "outliers"))
