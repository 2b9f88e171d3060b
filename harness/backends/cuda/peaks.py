"""The GPU's peaks, measured once per run, against which every GPU figure is a percentage.

  gbps      device-to-device copy (cuMemcpyDtoDAsync) of a buffer far larger than L2,
            counting read + write bytes, best of several: the bandwidth a kernel can get.
  gflops    cuBLAS SGEMM at n = 4096 through cupy or torch with TF32 OFF (true fp32), best of
            several; without either library, this repo's fastest matmul kernel (and it says so).
  gflops_physical, gbps_physical
            from device attributes: SMs x FP32 lanes x 2 x clock, and 2 x memory clock x bus
            width. Upper bounds: a figure above one is a measurement bug and gets flagged.
            A bound below what was measured means the attribute is wrong for this GPU (seen
            with some HBM parts), so it is dropped rather than flagging correct results.
  cache_flushed  every timed GPU call starts with a flushed L2, so no "cache-assisted" marks.
"""
from __future__ import annotations

import os
from typing import Callable


from . import driver as cd


def _best(timer: cd.EventTimer, work: Callable[[], None], repeats: int) -> float:
    timer.time(work)                                     # warm-up
    return min(timer.time(work) for _ in range(repeats))


def copy_bandwidth(ctx: cd.Context, timer: cd.EventTimer, nbytes: int, repeats: int) -> float:
    """GB/s of a device-to-device copy, read + write bytes."""
    src, dst = cd.DeviceBuffer(ctx, nbytes), cd.DeviceBuffer(ctx, nbytes)
    try:
        drv = cd.driver()
        t = _best(timer, lambda: cd.check(drv.cuMemcpyDtoDAsync(dst.ptr, src.ptr, nbytes, 0),
                                          "cuMemcpyDtoDAsync"), repeats)
    finally:
        src.free()
        dst.free()
    return 2.0 * nbytes / t / 1e9


def library_sgemm(timer: cd.EventTimer, n: int, repeats: int) -> tuple[float, str] | None:
    """(GFLOP/s, source) of cuBLAS fp32 SGEMM via cupy, else torch; None if neither works.
    Both libraries enqueue on the legacy default stream of the primary context: `timer`
    must live in that context."""
    for make in (_cupy_sgemm, _torch_sgemm):
        try:
            made = make(n)
        except Exception:                                # not installed, or no CUDA build
            continue
        if made is None:
            continue
        fn, label = made
        t = _best(timer, fn, repeats)
        return 2.0 * n ** 3 / t / 1e9, f"cuBLAS SGEMM {n}x{n}x{n} via {label}, TF32 off, best of {repeats}"
    return None


def _cupy_sgemm(n):
    os.environ.setdefault("CUPY_TF32", "0")              # cupy reads it at import: fp32 math
    import cupy as cp
    if os.environ.get("CUPY_TF32") not in (None, "0"):
        return None                                      # TF32 forced on by the user: not fp32
    rng = cp.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=cp.float32)
    b = rng.standard_normal((n, n), dtype=cp.float32)
    out = cp.empty((n, n), dtype=cp.float32)
    cp.cuda.Device().synchronize()
    return (lambda: cp.matmul(a, b, out=out)), f"cupy {cp.__version__}"


def _torch_sgemm(n):
    import torch
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn((n, n), device="cuda", dtype=torch.float32, generator=g)
    b = torch.randn((n, n), device="cuda", dtype=torch.float32, generator=g)
    out = torch.empty((n, n), device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    return (lambda: torch.matmul(a, b, out=out)), f"torch {torch.__version__}"


def measure(quick: bool, fallback_sgemm: Callable[[int], tuple[float, str]] | None = None,
            ordinal: int = 0) -> dict:
    """The peaks dict for device "gpu" (see harness.core.peaks.pct_and_flags)."""
    info = cd.device_info(ordinal)
    ctx = cd.Context(ordinal, primary=True)              # the context cupy and torch use
    timer = cd.EventTimer(ctx, info.l2_bytes)
    repeats = 3 if quick else 5
    try:
        copy_bytes = max(256 << 20 if quick else 1 << 30, 8 * info.l2_bytes)
        gbps = copy_bandwidth(ctx, timer, copy_bytes, repeats)
        n = 2048 if quick else 4096
        with ctx:
            lib = library_sgemm(timer, n, repeats)
    finally:
        timer.close()
        ctx.destroy()
    if lib is None and fallback_sgemm is not None:
        lib = fallback_sgemm(n)
    gflops, gflops_source = lib if lib else (None, "no cuBLAS (cupy/torch) and no fallback")
    phys_flops, phys_bw = info.physical_gflops(), info.physical_gbps()
    notes = []
    if phys_bw and gbps > phys_bw:
        notes.append(f"memory clock x bus width gives {phys_bw:.0f} GB/s, below the measured copy: "
                     f"attribute ignored")
        phys_bw = None
    if phys_flops and gflops and gflops > phys_flops:
        notes.append(f"SM clock x FP32 lanes gives {phys_flops:.0f} GFLOP/s, below cuBLAS: attribute ignored")
        phys_flops = None
    return {
        "device": "gpu",
        "gpu": info.name,
        "gflops": gflops,
        "gflops_source": gflops_source,
        "gbps": gbps,
        "gbps_source": f"cuMemcpyDtoDAsync {copy_bytes >> 20} MiB (read + write bytes), best of {repeats}",
        "gflops_physical": phys_flops,
        "gbps_physical": phys_bw,
        "cache_bytes": info.l2_bytes,
        "cache_flushed": True,
        "notes": notes,
    }
