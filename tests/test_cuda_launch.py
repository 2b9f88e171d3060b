"""The launch glue (cuda_impl/launch.py), checked at sizes no emulator can run: every
variant's grid covers its work at odd and at the GPU ladder's largest sizes, stays inside
CUDA's limits, matches the kernel's __launch_bounds__, and refuses dims it cannot run with
the reason. (The emulator tests prove the kernels compute the right thing with this same
geometry at small sizes.)"""
from __future__ import annotations

import re

import pytest

from cuda_impl import launch as L
from harness import catalogue

ODD = {"add": [(1,), (3,), (1023,), (1025,), (2**20 + 3,), (2**28,), (2**30,)],
       "softmax": [(1, 1), (7, 4097), (255, 33), (16384, 16384), (1, 32768), (100003, 3)],
       "matmul": [(1, 1, 1), (129, 127, 131), (1000, 17, 4099), (8192, 8192, 8192), (5, 3, 70000)]}
ODD["relu"] = ODD["gelu"] = ODD["add"]
ODD["layernorm"] = ODD["softmax"]


def _all_dims(primitive):
    prim = catalogue.PRIMITIVES[primitive]
    return [*prim.check_dims, *(prim.dims_for(n) for n in prim.gpu_ladder), *ODD[primitive]]


CASES = [pytest.param(p, v, id=f"{p}-{v}") for p in L.FAMILIES for v in L.variants(p)]


def _launch_bounds(primitive: str) -> dict[str, int]:
    """kernel name -> the __launch_bounds__ in its .cu (macros expanded for the simple cases)."""
    src = L.source(primitive)
    macros = dict(re.findall(r"#define\s+(\w+)\s+(.+?)\s*(?://.*)?$", src, re.M))
    bounds = {}
    for expr, name in re.findall(r"__launch_bounds__\(([^)]*(?:\)[^)]*)*?)\)\s*\n?\s*(\w+)\s*\(", src):
        for _ in range(5):
            expr = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: f"({macros.get(m.group(), m.group())})", expr)
        bounds[name] = int(eval(expr, {"__builtins__": {}}))          # noqa: S307 - our own source
    return bounds


@pytest.mark.parametrize("primitive,variant", CASES)
def test_grid_covers_the_work_within_cuda_limits(primitive, variant):
    fam = L.family(primitive)
    v = fam.variant(variant)
    bounds = _launch_bounds(primitive)
    assert v.kernel in bounds, f"{v.kernel} has no __launch_bounds__ in {fam.source}"
    for dims in _all_dims(primitive):
        if L.limit(primitive, variant, dims):
            continue
        lc = L.launch(primitive, variant, dims)
        threads = lc.threads_per_block
        assert threads <= bounds[v.kernel], f"{dims}: {threads} threads > __launch_bounds__({bounds[v.kernel]})"
        assert threads % 32 == 0, f"{dims}: block {lc.block} is not whole warps"
        assert all(1 <= g <= cap for g, cap in zip(lc.grid, L.MAX_GRID)), f"{dims}: grid {lc.grid} out of limits"
        assert lc.shared_bytes + 0 <= 48 * 1024
        ex, ey = fam.extent_of(v, dims)
        px, py = v.per_block(dims)
        if v.strided:                     # a loop covers the rest; one wave of blocks at most
            assert lc.grid[0] * px >= min(ex, L.DEFAULT_SM_COUNT * L.BLOCKS_PER_SM * px) and lc.grid[1] * py >= ey
        else:
            assert lc.grid[0] * px >= ex and lc.grid[1] * py >= ey, f"{dims}: grid {lc.grid} misses work"
            assert (lc.grid[0] - 1) * px < ex and (lc.grid[1] - 1) * py < ey, f"{dims}: grid {lc.grid} has idle blocks"


def test_scalar_arguments_follow_the_kernel_signatures():
    assert L.launch("add", "naive", (1000,)).scalars == (1000,)
    assert L.launch("softmax", "warp_online", (7, 9)).scalars == (7, 9)
    # catalogue dims are (M, K, N); the kernels take M, N, K.
    assert L.launch("matmul", "warptile", (3, 5, 7)).scalars == (3, 7, 5)


def test_block_registers_sizes_its_block_from_the_row():
    assert L.registers_block(1) == 128                     # small rows: still 4 warps
    assert L.registers_block(8192) == 256                  # 32 values per thread
    assert L.registers_block(8193) == 288                  # whole warps, not powers of two
    assert L.registers_block(32768) == 1024
    for cols in (1, 33, 4097, 8192, 8193, 16384, 32768):
        assert L.registers_block(cols) * L.REG_FLOATS >= cols


def test_dims_a_kernel_cannot_run_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at most 32768 columns"):
        L.launch("softmax", "block_registers", (2, 32769))
    assert L.limit("softmax", "block_online", (2, 32769)) is None   # the long-rows variant takes it
    with pytest.raises(ValueError, match="2\\^30"):
        L.launch("add", "vec4", (2**30 + 1,))
    with pytest.raises(ValueError, match="int32"):
        L.launch("matmul", "naive", (50000, 50000, 2))
    with pytest.raises(ValueError, match="grid.y"):
        L.launch("matmul", "naive", (4, 4, 32 * 65535 + 1))   # naive puts N on grid.y
    with pytest.raises(ValueError, match="empty"):
        L.launch("add", "naive", (0,))


def test_every_primitive_has_a_family_and_naive_comes_first():
    assert set(L.FAMILIES) == set(catalogue.PRIMITIVES)
    for p in L.FAMILIES:
        names = L.variants(p)
        assert names[0] in ("naive", "row_per_thread") and len(set(names)) == len(names)
        assert L.source_path(p).exists()
