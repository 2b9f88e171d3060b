"""Every CUDA kernel variant, run on the CPU emulator (tests/cuda_emu), verified against the
declaration's float64 reference - the main evidence that the kernels are right on a machine
without a GPU.

Each case launches exactly as the backend does: the variant read from the .cu (every step's
`// launch:` line, with an H200's SM count), its scratch buffers allocated (and filled with
NaN, so a step that reads scratch no earlier step wrote fails), its steps run in file order
on the same arrays, kernels.arguments() laying out each step's arguments by name.
It runs at the declaration's check dims (odd, non-square, not multiples of any tile) and
long check dims, on EVERY distribution the declaration lists, stress ones included (the
project's own kernels are held to them: large offsets, DC offsets, constant rows).
Outputs start as NaN (int64 ones as the sentinel), so an element no thread writes fails.
The emulator runs warps as fibers with real __syncthreads / shuffle semantics and guard
pages around every buffer, so a missing barrier or an out-of-bounds access fails here too.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from harness.backends.cuda import kernels as K
from harness.core import catalogue
from harness.core.declaration import INT_SENTINEL
from harness.core.verify import verify

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")

SEED = 0
WITH_CUDA = [p for p in catalogue.PRIMITIVES.values() if K.variants(p.name)]


def run_on_emulator(spec: K.Variant, prim, inputs: dict, dims, scalars=None,
                    sm_count: int = K.DEFAULT_SM_COUNT) -> dict:
    """Launch one variant (every step, in order) exactly as the backend would; return every
    output by name."""
    from tests.cuda_emu import run_kernel

    plan = K.plan(spec, dims, sm_count)
    arrays = {}
    for t in prim.tensors:
        if t.role == "in":
            arrays[t.name] = inputs[t.name]
        elif t.role == "inout":
            arrays[t.name] = np.array(inputs[t.name], copy=True)
        else:
            arrays[t.name] = np.full(prim.shape_of(t, dims), np.nan if t.dtype == "float32" else INT_SENTINEL,
                                     dtype=t.np_dtype)
    for name, (shape, dtype) in plan.scratch.items():
        arrays[name] = poisoned(shape, dtype)
    for step, lc in zip(plan.variant.steps, plan.launches):
        run_kernel(spec.source, step.kernel, lc.grid, lc.block, lc.shared_bytes,
                   K.arguments(step, prim, arrays, dims, scalars))
    return {t.name: arrays[t.name] for t in prim.outputs}


def poisoned(shape, dtype) -> np.ndarray:
    """What scratch holds before a variant's first step: NaN, or -1 for integers."""
    return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -1, dtype=dtype)


def _check(primitive, variant, dims, distributions, **kw):
    prim = catalogue.get(primitive)
    spec = K.spec(primitive, variant)
    failures = []
    for dist in distributions:
        inputs = prim.make_inputs(dims, dist, SEED)
        v = verify(prim, inputs, run_on_emulator(spec, prim, inputs, dims, **kw), dims)
        if not v.ok:
            failures.append(f"{dist}: {v.message}")
    assert not failures, f"{primitive}/{variant} at {dims}:\n" + "\n".join(failures)


def _cases(which, prims=None):
    out = []
    for prim in prims or WITH_CUDA:
        for v in K.variants(prim.name):
            for dims in which(prim):
                out.append(pytest.param(prim.name, v, dims, id=f"{prim.name}-{v}-{prim.shape_label(dims)}"))
    return out


@pytest.mark.parametrize("primitive,variant,dims", _cases(lambda p: p.check_dims))
def test_variant_verifies_on_every_distribution(primitive, variant, dims):
    _check(primitive, variant, dims, catalogue.get(primitive).all_distributions)


@pytest.mark.parametrize("primitive,variant,dims", _cases(lambda p: p.long_check_dims))
def test_variant_verifies_at_the_long_check_dims(primitive, variant, dims):
    """Big enough for many blocks, many loop trips per thread and full tiles."""
    _check(primitive, variant, dims, catalogue.get(primitive).all_distributions)


# Long rows, vectorised (cols % 4 == 0): many float4s per thread, and block_registers at a
# 512-thread block and at its widest, 1024 threads x 32 values.
LONG_ROWS = ((4, 16384), (2, 32768))
ROW_PRIMS = [p for p in WITH_CUDA if p.dims == ("rows", "cols")]


@pytest.mark.parametrize("primitive,variant,dims", _cases(lambda p: LONG_ROWS, ROW_PRIMS))
def test_long_rows_verify_on_emulator(primitive, variant, dims):
    prim = catalogue.get(primitive)
    why = K.limit(K.spec(primitive, variant), dims)
    if why:                                   # a register-resident row has a declared ceiling
        assert "requires" in why, why
        pytest.skip(f"{primitive}/{variant} refuses {dims}: {why}")
    _check(primitive, variant, dims, [d for d in ("normal", "large_offset", "dc_offset") if d in prim.all_distributions])


# Matmul: tile-edge cases where the float4 paths are live: K and N multiples of 4 but M, N
# not multiples of any tile (vector loads with partial tiles), K % 4 == 0 with N % 4 != 0
# (vector A loads, scalar B loads and C stores), and a long K on the vector path (many BK
# steps through shared memory).
MATMUL_EXTRA = ((200, 132, 260), (130, 68, 129), (65, 1000, 132))


@pytest.mark.parametrize("primitive,variant,dims",
                         _cases(lambda p: MATMUL_EXTRA, [p for p in WITH_CUDA if p.file_stem == "matmul"]))
def test_matmul_tile_edges_verify_on_emulator(primitive, variant, dims):
    _check(primitive, variant, dims, catalogue.get(primitive).distributions)


ELEMENTWISE = [p for p in WITH_CUDA if p.dims == ("n",)]
# Variants whose grid is capped by the SM count (a loop over the array), and float4 variants.
GRID_STRIDE = [pytest.param(p.name, v, id=f"{p.name}-{v}") for p in ELEMENTWISE for v in K.variants(p.name)
               if "sms" in K.spec(p.name, v).only().grid]
VEC4 = [p.name for p in ELEMENTWISE if "vec4" in K.variants(p.name)]


@pytest.mark.parametrize("primitive,variant", GRID_STRIDE)
def test_grid_stride_loops_cover_arrays_larger_than_the_grid(primitive, variant):
    """With the H200's SM count the check sizes fit in one pass of the grid; a 1-SM grid
    (8 blocks of 256) makes every thread go round its loop several times."""
    n = 3 * 8 * 256 * 4 + 3                  # > 3 passes even for vec4, and n % 4 == 3
    assert K.launch(K.spec(primitive, variant), (n,), sm_count=1).grid == (8, 1, 1)
    _check(primitive, variant, (n,), ("normal",), sm_count=1)


@pytest.mark.parametrize("primitive", VEC4)
def test_vec4_falls_back_to_scalar_for_unaligned_pointers(primitive):
    """cuMemAlloc'd buffers are 256-byte aligned, but the kernel must not fault (misaligned
    float4) or skip elements when handed pointers 4 bytes into a buffer: a wrapper kernel
    with the same signature calls it with every pointer shifted by one element."""
    from tests.cuda_emu import run_kernel

    prim = catalogue.get(primitive)
    spec = K.spec(primitive, "vec4").only()
    n = 1001
    forwarded = ", ".join(f"{p.name} + 1" if p.pointer else f"{p.name} - 1" if p.name == "n" else p.name
                          for p in spec.params)
    wrapper = (f'\nextern "C" __global__ void __launch_bounds__(256) shifted_vec4('
               f"{', '.join(p.text for p in spec.params)})\n{{ {spec.kernel}({forwarded}); }}\n")
    inputs = prim.make_inputs((n + 1,), "normal", SEED)
    arrays = {k: np.array(a, copy=True) for k, a in inputs.items()}      # inout ones are updated in place
    for t in prim.returned:
        arrays[t.name] = np.full(n + 1, np.nan, dtype=np.float32)
    lc = K.launch(spec, (n,))
    run_kernel(spec.source + wrapper, "shifted_vec4", lc.grid, lc.block, 0, K.arguments(spec, prim, arrays, (n + 1,)))
    shifted_in = {k: a[1:] for k, a in inputs.items()}
    for t in prim.returned:
        assert np.isnan(arrays[t.name][0]), "wrote before the shifted output pointer"
    for t in prim.outputs:
        if t.role == "inout":
            assert arrays[t.name][0] == inputs[t.name][0], "updated the element before the shifted pointer"
    v = verify(prim, shifted_in, {t.name: arrays[t.name][1:] for t in prim.outputs}, (n,))
    assert v.ok, v.message


@pytest.mark.parametrize("primitive", [p.name for p in ROW_PRIMS if "block_registers" in K.variants(p.name)])
def test_registers_variant_at_an_odd_block(primitive):
    """block_registers sizes its block from cols; at 4100 cols (not a multiple of 4: scalar
    slots) the block is not a power of two (160 threads at 32 values per thread, 288 at 16),
    and every slot of every thread is used."""
    dims = (3, 4100)
    block = K.launch(K.spec(primitive, "block_registers"), dims).block[0]
    assert block % 32 == 0 and block & (block - 1), block
    _check(primitive, "block_registers", dims, catalogue.get(primitive).all_distributions)


EPS_PRIMS = [p.name for p in WITH_CUDA if any(s.name == "eps" for s in p.scalars) and "small_spread" in p.distributions]


@pytest.mark.parametrize("primitive", EPS_PRIMS)
def test_eps_is_taken_from_its_scalar(primitive):
    """eps is a kernel argument: a different eps changes the small-spread rows, and every
    variant (every step that takes it) follows it."""
    prim = catalogue.get(primitive)
    dims = (17, 1000)
    inputs = prim.make_inputs(dims, "small_spread", SEED)
    for v in K.variants(primitive):
        outs = run_on_emulator(K.spec(primitive, v), prim, inputs, dims, {"eps": 1e-3})
        assert verify(prim, inputs, outs, dims, scalars={"eps": 1e-3}).ok, v
        assert not verify(prim, inputs, outs, dims).ok, f"{v}: eps=1e-3 passes against the default eps"


STEP_PRIMS = [p.name for p in WITH_CUDA if any(s.name == "step" for s in p.scalars)]


@pytest.mark.parametrize("primitive", STEP_PRIMS)
@pytest.mark.parametrize("step", [1, 2, 10, 1000])
def test_the_step_number_reaches_the_bias_correction(primitive, step):
    """AdamW at the first step (1 - beta2 is exact: the biggest correction), a few early ones
    and a late one, each verified with its own step and refused with another."""
    prim = catalogue.get(primitive)
    dims = (1003,)
    inputs = prim.make_inputs(dims, "normal", SEED)
    for v in K.variants(primitive):
        outs = run_on_emulator(K.spec(primitive, v), prim, inputs, dims, {"step": step})
        verdict = verify(prim, inputs, outs, dims, scalars={"step": step})
        assert verdict.ok, f"{v} step {step}: {verdict.message}"
        assert not verify(prim, inputs, outs, dims, scalars={"step": step + 1}).ok, f"{v}: step {step} = {step + 1}?"
