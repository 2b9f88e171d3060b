"""Speed figures for the emulator:  python tests/cuda_emu/bench.py

Prints the wall time of a few launches (compilation excluded: each kernel
is launched once untimed first) and the fiber throughput.  The numbers quoted
in README.md come from this script.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from tests.cuda_emu import last_launch_stats, run_kernel  # noqa: E402
from tests.test_cuda_emu import MATMUL, MATMUL_REG  # noqa: E402  (the test kernels)

EMPTY = r"""
extern "C" __global__ void touch(float* out) {
    if (threadIdx.x == 0) out[blockIdx.x] = 1.0f;
}
extern "C" __global__ void barriers(float* out, int rounds) {
    float v = 0.0f;
    for (int r = 0; r < rounds; ++r) { v += 1.0f; __syncthreads(); }
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
extern "C" __global__ void shuffles(float* out, int rounds) {
    float v = threadIdx.x;
    for (int r = 0; r < rounds; ++r) v += __shfl_xor_sync(0xffffffff, v, 1);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
"""


def timed(source, kernel, grid, block, shared, args):
    run_kernel(source, kernel, grid, block, shared, args)  # compile + warm up
    t0 = time.perf_counter()
    run_kernel(source, kernel, grid, block, shared, args)
    return time.perf_counter() - t0, dict(last_launch_stats)


def main():
    blocks = 2000
    out = np.zeros(blocks, np.float32)
    t, s = timed(EMPTY, "touch", blocks, 1024, 0, [out])
    print(f"empty kernel, {blocks} blocks x 1024 threads: {t:.3f} s "
          f"-> {s['threads'] / s['seconds'] / 1e6:.1f} M CUDA threads (fiber runs) per second")
    t, s = timed(EMPTY, "barriers", 64, 1024, 0, [np.zeros(64, np.float32), np.int32(100)])
    print(f"__syncthreads, 64 blocks x 1024 threads x 100 barriers: {t:.3f} s "
          f"-> {s['resumes'] / s['seconds'] / 1e6:.1f} M fiber switches per second")
    t, s = timed(EMPTY, "shuffles", 64, 1024, 0, [np.zeros(64, np.float32), np.int32(100)])
    print(f"__shfl_xor_sync, 64 blocks x 1024 threads x 100 shuffles: {t:.3f} s "
          f"-> {s['resumes'] / s['seconds'] / 1e6:.1f} M fiber switches per second")

    rng = np.random.default_rng(0)
    for (m, n, k), tile in (((129, 127, 131), 16), ((129, 127, 131), 32), ((1000, 1000, 1000), 32)):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        t, s = timed(f"#define TILE {tile}\n" + MATMUL, "matmul_tiled",
                     ((n + tile - 1) // tile, (m + tile - 1) // tile), (tile, tile), 0,
                     [a, b, c, np.int32(m), np.int32(n), np.int32(k)])
        err = np.abs(c - a.astype(np.float64) @ b).max()
        print(f"shared-memory tiled matmul {m}x{n}x{k}, {tile}x{tile} blocks: {t:.3f} s "
              f"({s['resumes'] / 1e6:.1f} M switches, max error {err:.1e})")

    m = n = k = 1000
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.zeros((m, n), np.float32)
    t, s = timed(MATMUL_REG, "matmul_regtile", ((n + 63) // 64, (m + 63) // 64), 256, 0,
                 [a, b, c, np.int32(m), np.int32(n), np.int32(k)])
    err = np.abs(c - a.astype(np.float64) @ b).max()
    print(f"register-tiled matmul {m}x{n}x{k}, 256 threads, 64x64 tiles: {t:.3f} s "
          f"({s['resumes'] / 1e6:.1f} M switches, max error {err:.1e})")


if __name__ == "__main__":
    main()
