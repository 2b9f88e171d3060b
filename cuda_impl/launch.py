"""Launch glue for the kernels in this folder: for each primitive, which .cu file holds it,
and for each variant the kernel's name, its block and grid for given dims, its dynamic
shared memory, and its scalar arguments. The CUDA backend and the tests (NVRTC builds, the
CPU emulator, the GPU tests) all launch through `launch()`, so a geometry bug cannot hide
in one of them.

Every kernel of a primitive takes the same arguments, in this order:

    the inputs' device pointers, in the catalogue's order (a, b / x / x, gamma, beta / a, b),
    the output's device pointer,
    int32 sizes:  n  |  rows, cols  |  M, N, K

Dims are the catalogue's: (n,) elementwise, (rows, cols) for softmax/layernorm, and
(M, K, N) for matmul (note the kernel takes M, N, K, as in cuBLAS and siboehm's worklog).

Sizes are int32 inside the kernels (cheaper index math than 64-bit): `launch()` refuses
dims whose element counts do not fit, with the reason, before anything reaches a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent

Dims = tuple[int, ...]
Dim3 = tuple[int, int, int]

DEFAULT_SM_COUNT = 132          # H100/H200; the backend passes the real GPU's count
BLOCKS_PER_SM = 8               # grid-stride kernels: 8 x 256 threads = a full SM, one wave
REG_FLOATS = 32                 # block_registers: row values held per thread (REG_FLOATS in the .cu)
MAX_THREADS = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)
INT32_MAX = 2**31 - 1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Variant:
    name: str                                          # as the harness shows it
    kernel: str                                        # the extern "C" entry point in the .cu
    block: Callable[[Dims], Dim3]
    grid: Callable[[Dims, int], Dim3]                  # (dims, SM count) -> grid
    per_block: Callable[[Dims], tuple[int, int]]       # (x, y) work items one block covers
    shared_bytes: Callable[[Dims], int] = lambda d: 0  # dynamic shared memory per block
    strided: bool = False                              # loops over the work: grid may be smaller
    extent: Callable[[Dims], tuple[int, int]] | None = None   # overrides the family's (x, y) work
    limit: Callable[[Dims], str | None] = lambda d: None      # why these dims cannot run, or None


@dataclass(frozen=True)
class Family:
    primitive: str
    source: str                                        # file name in this folder
    scalars: Callable[[Dims], tuple[int, ...]]         # the int32 arguments after the pointers
    extent: Callable[[Dims], tuple[int, int]]          # (x, y) work the grid must cover
    variants: tuple[Variant, ...] = field(default_factory=tuple)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"{self.primitive} has no CUDA variant {name!r}; "
                       f"valid: {', '.join(v.name for v in self.variants)}")

    def extent_of(self, variant: Variant, dims: Dims) -> tuple[int, int]:
        return (variant.extent or self.extent)(dims)


@dataclass(frozen=True)
class Launch:
    """Everything cuLaunchKernel needs besides the pointers."""
    kernel: str
    grid: Dim3
    block: Dim3
    shared_bytes: int
    scalars: tuple[int, ...]

    @property
    def threads_per_block(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]


# ----------------------------------------------------------------------------- elementwise

def _elementwise(primitive: str) -> Family:
    def capped(blocks: int, sms: int) -> int:          # grid-stride: at most one full wave
        return max(1, min(blocks, sms * BLOCKS_PER_SM))
    return Family(
        primitive=primitive, source=f"{primitive}.cu",
        scalars=lambda d: (d[0],),
        extent=lambda d: (d[0], 1),
        variants=(
            Variant("naive", f"{primitive}_naive", block=lambda d: (256, 1, 1),
                    grid=lambda d, sms: (cdiv(d[0], 256), 1, 1), per_block=lambda d: (256, 1)),
            Variant("grid_stride", f"{primitive}_grid_stride", block=lambda d: (256, 1, 1),
                    grid=lambda d, sms: (capped(cdiv(d[0], 256), sms), 1, 1), per_block=lambda d: (256, 1),
                    strided=True),
            Variant("vec4", f"{primitive}_vec4", block=lambda d: (256, 1, 1),
                    grid=lambda d, sms: (capped(cdiv(d[0], 4 * 256), sms), 1, 1), per_block=lambda d: (1024, 1),
                    strided=True),
        ))


def _elementwise_limit(d: Dims) -> str | None:
    # Grid-stride loops add the stride to an int index that must not overflow.
    return f"n = {d[0]} is above the int32 kernels' limit of 2^30 elements" if d[0] > 2**30 else None


# ----------------------------------------------------------------------------- rows

def registers_block(cols: int) -> int:
    """block_registers: threads per row so that REG_FLOATS per thread hold the row; a multiple
    of 32 (whole warps), at least 128 (so small rows still fill an SM with blocks)."""
    return min(MAX_THREADS, max(128, 32 * cdiv(cdiv(cols, REG_FLOATS), 32)))


def _registers_limit(d: Dims) -> str | None:
    cap = MAX_THREADS * REG_FLOATS
    if d[1] > cap:
        return (f"block_registers keeps a row in registers: at most {cap} columns "
                f"({MAX_THREADS} threads x {REG_FLOATS}), got {d[1]}; block_online handles longer rows")
    return None


def _rows_common() -> dict:
    return dict(scalars=lambda d: (d[0], d[1]), extent=lambda d: (d[0], 1))


def _row_per_thread(prefix):
    return Variant("row_per_thread", f"{prefix}_row_per_thread", block=lambda d: (256, 1, 1),
                   grid=lambda d, sms: (cdiv(d[0], 256), 1, 1), per_block=lambda d: (256, 1))


def _block_shared(prefix):
    return Variant("block_shared", f"{prefix}_block_shared", block=lambda d: (256, 1, 1),
                   grid=lambda d, sms: (d[0], 1, 1), per_block=lambda d: (1, 1),
                   shared_bytes=lambda d: 256 * 4)     # one float partial per thread


def _warp_per_row(name, kernel):
    return Variant(name, kernel, block=lambda d: (256, 1, 1),            # 8 warps = 8 rows
                   grid=lambda d, sms: (cdiv(d[0], 8), 1, 1), per_block=lambda d: (8, 1))


def _block_registers(prefix):
    return Variant("block_registers", f"{prefix}_block_registers",
                   block=lambda d: (registers_block(d[1]), 1, 1),
                   grid=lambda d, sms: (d[0], 1, 1), per_block=lambda d: (1, 1), limit=_registers_limit)


SOFTMAX = Family(primitive="softmax", source="softmax.cu", **_rows_common(), variants=(
    _row_per_thread("softmax"),
    _block_shared("softmax"),
    _warp_per_row("warp_online", "softmax_warp_online"),
    Variant("block_online", "softmax_block_online", block=lambda d: (1024, 1, 1),
            grid=lambda d, sms: (d[0], 1, 1), per_block=lambda d: (1, 1)),
    _block_registers("softmax"),
))

LAYERNORM = Family(primitive="layernorm", source="layernorm.cu", **_rows_common(), variants=(
    _row_per_thread("layernorm"),
    _block_shared("layernorm"),
    _warp_per_row("warp_welford", "layernorm_warp_welford"),
    _block_registers("layernorm"),
))


# ----------------------------------------------------------------------------- matmul
# dims = (M, K, N). Work extent (x, y) = (N columns, M rows) of C, except naive: (M, N).

def _tiled(name, threads, tile):
    return Variant(name, f"matmul_{name}", block=lambda d: (threads, 1, 1),
                   grid=lambda d, sms: (cdiv(d[2], tile), cdiv(d[0], tile), 1),
                   per_block=lambda d: (tile, tile))


MATMUL = Family(
    primitive="matmul", source="matmul.cu",
    scalars=lambda d: (d[0], d[2], d[1]),             # (M, K, N) -> M, N, K
    extent=lambda d: (d[2], d[0]),
    variants=(
        Variant("naive", "matmul_naive", block=lambda d: (32, 32, 1),
                grid=lambda d, sms: (cdiv(d[0], 32), cdiv(d[2], 32), 1), per_block=lambda d: (32, 32),
                extent=lambda d: (d[0], d[2])),      # threadIdx.x walks rows: the slow mapping
        Variant("coalesced", "matmul_coalesced", block=lambda d: (32, 32, 1),
                grid=lambda d, sms: (cdiv(d[2], 32), cdiv(d[0], 32), 1), per_block=lambda d: (32, 32)),
        Variant("smem_tiles", "matmul_smem_tiles", block=lambda d: (32, 32, 1),
                grid=lambda d, sms: (cdiv(d[2], 32), cdiv(d[0], 32), 1), per_block=lambda d: (32, 32)),
        _tiled("blocktile_1d", 512, 64),
        _tiled("blocktile_2d", 256, 128),
        _tiled("vectorized", 256, 128),
        _tiled("warptile", 128, 128),
    ))


def _matmul_limit(d: Dims) -> str | None:
    m, k, n = d
    for what, count in (("A (M x K)", m * k), ("B (K x N)", k * n), ("C (M x N)", m * n)):
        if count > INT32_MAX:
            return f"{what} has {count} elements, above the int32 kernels' limit of 2^31 - 1"
    return None


def _rows_limit(d: Dims) -> str | None:
    return (f"rows x cols = {d[0] * d[1]} is above the int32 kernels' limit of 2^31 - 1"
            if d[0] * d[1] > INT32_MAX else None)


FAMILIES: dict[str, Family] = {f.primitive: f for f in (
    _elementwise("add"), _elementwise("relu"), _elementwise("gelu"), SOFTMAX, LAYERNORM, MATMUL)}
_FAMILY_LIMITS = {"add": _elementwise_limit, "relu": _elementwise_limit, "gelu": _elementwise_limit,
                  "softmax": _rows_limit, "layernorm": _rows_limit, "matmul": _matmul_limit}


# ----------------------------------------------------------------------------- the API

def family(primitive: str) -> Family | None:
    return FAMILIES.get(primitive)


def variants(primitive: str) -> list[str]:
    """Variant names, naive first; [] for a primitive without CUDA kernels."""
    fam = FAMILIES.get(primitive)
    return [v.name for v in fam.variants] if fam else []


def source_path(primitive: str) -> Path:
    return HERE / FAMILIES[primitive].source


def source(primitive: str) -> str:
    return source_path(primitive).read_text(encoding="utf-8")


def limit(primitive: str, variant: str, dims: Dims) -> str | None:
    """Why this (variant, dims) cannot be launched, or None when it can."""
    fam = FAMILIES[primitive]
    why = _FAMILY_LIMITS[primitive](dims) or fam.variant(variant).limit(dims)
    if why:
        return why
    lc = _geometry(fam, fam.variant(variant), dims, DEFAULT_SM_COUNT)
    for axis, g, cap in zip("xyz", lc.grid, MAX_GRID):
        if g > cap:
            return f"grid.{axis} = {g} is above CUDA's limit of {cap} for these dims"
    return None


def _geometry(fam: Family, v: Variant, dims: Dims, sm_count: int) -> Launch:
    return Launch(kernel=v.kernel, grid=tuple(v.grid(dims, sm_count)), block=tuple(v.block(dims)),
                  shared_bytes=int(v.shared_bytes(dims)), scalars=tuple(int(s) for s in fam.scalars(dims)))


def launch(primitive: str, variant: str, dims: Dims, sm_count: int = DEFAULT_SM_COUNT) -> Launch:
    """The launch of one variant for dims; ValueError (with the reason) if it cannot run."""
    dims = tuple(int(d) for d in dims)
    if min(dims) < 1:
        raise ValueError(f"{primitive}: empty dims {dims}")
    why = limit(primitive, variant, dims)
    if why:
        raise ValueError(f"{primitive}/{variant}: {why}")
    fam = FAMILIES[primitive]
    return _geometry(fam, fam.variant(variant), dims, sm_count)
