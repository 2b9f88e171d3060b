"""Tests of the CPU CUDA emulator in tests/cuda_emu (no GPU needed).

The sample kernels below are written the way the project's kernels are
(header-free, `extern "C" __global__`, for NVRTC); each test checks results
against numpy, or checks that a kernel bug is reported as a Python exception
instead of a wrong answer, a crash of pytest, or a hang.
"""

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # pytest adds it (pyproject: pythonpath = ["."]); bench.py does not
    sys.path.insert(0, str(REPO))
from tests.cuda_emu import CompileError, EmulatorError, LaunchConfigError, emu, run_kernel  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which(emu.CXX) is None, reason=f"the CUDA emulator needs {emu.CXX}")
rng = np.random.default_rng(1234)


def cdiv(a, b):
    return (a + b - 1) // b


def line_of(src, text):
    """1-based line of `text` in `src`, as the compiler numbers the kernel source."""
    return src[:src.index(text)].count("\n") + 1


def randf(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------
# Elementwise kernels
# --------------------------------------------------------------------------
VEC_ADD = r"""
extern "C" __global__ void vec_add(const float* __restrict__ a, const float* __restrict__ b,
                                   float* __restrict__ c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
"""


@pytest.mark.parametrize("n", [1, 255, 256, 1000])
def test_vec_add_bounds_check(n):
    a, b = randf(n), randf(n)
    c = np.full(n + 0, np.nan, np.float32)
    run_kernel(VEC_ADD, "vec_add", cdiv(n, 256), 256, 0, [a, b, c, np.int32(n)])
    np.testing.assert_array_equal(c, a + b)


def test_in_process_launch_for_debugging():
    # isolate=False skips the child process (for gdb); a reported error must
    # leave the emulator ready for the next launch.
    a, b, c = randf(70), randf(70), np.zeros(70, np.float32)
    with pytest.raises(EmulatorError, match="deadlock"):
        run_kernel(BUGS, "shuffle_vs_barrier", 1, 32, 0, [c], isolate=False)
    run_kernel(VEC_ADD, "vec_add", 3, 32, 0, [a, b, c, np.int32(70)], isolate=False)
    np.testing.assert_array_equal(c, a + b)


SAXPY = r"""
extern "C" __global__ void saxpy(int n, float alpha, const float* x, float* y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = alpha * x[i] + y[i];
}
"""


def test_grid_stride_loop():
    n = 10007  # far more elements than the 3 x 64 threads
    x, y = randf(n), randf(n)
    expect = np.float32(2.5) * x + y
    run_kernel(SAXPY, "saxpy", 3, 64, 0, [np.int32(n), np.float32(2.5), x, y])
    np.testing.assert_array_equal(y, expect)  # each element updated exactly once


SCALE4 = r"""
extern "C" __global__ void scale4(const float* __restrict__ x, float* __restrict__ y, float s, int n) {
    const int n4 = n / 4;
    const int stride = blockDim.x * gridDim.x;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = __ldg(&x4[i]);
        y4[i] = make_float4(v.x * s, v.y * s, v.z * s, v.w * s);
    }
    for (int i = 4 * n4 + blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)  // scalar tail
        y[i] = x[i] * s;
}

// The classic bug: rounding the vector count up instead of handling a tail.
extern "C" __global__ void scale4_no_tail(const float4* __restrict__ x, float4* __restrict__ y, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (n + 3) / 4) {
        float4 v = x[i];
        y[i] = make_float4(v.x * s, v.y * s, v.z * s, v.w * s);
    }
}
"""


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1027])
def test_float4_loads_with_scalar_tail(n):
    x, y = randf(n), np.full(n, np.nan, np.float32)
    run_kernel(SCALE4, "scale4", 2, 64, 0, [x, y, np.float32(3.0), np.int32(n)])
    np.testing.assert_array_equal(y, x * np.float32(3.0))


def test_float4_overrun_into_alignment_padding_is_caught():
    # n = 5: the second float4 covers elements 4..7, i.e. 12 bytes past the
    # end - inside the 16-byte alignment padding, so no guard page fault; the
    # canary check still sees the write.
    x, y = randf(5), np.zeros(5, np.float32)
    with pytest.raises(EmulatorError, match=r"scale4_no_tail.*out-of-bounds write to argument 1 'y'"):
        run_kernel(SCALE4, "scale4_no_tail", 1, 32, 0, [x, y, np.float32(2.0), np.int32(5)])
    assert not y.any(), "arrays must be left untouched when a launch fails"


INDEX3D = r"""
extern "C" __global__ void index3d(int* out) {
    int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int per_block = blockDim.x * blockDim.y * blockDim.z;
    out[bx * per_block + tx] = 1000 * bx + tx;
}
"""


def test_3d_grid_and_block_indices():
    grid, block = (2, 3, 2), (4, 3, 2)
    per_block, blocks = 24, 12
    out = np.full(per_block * blocks, -1, np.int32)
    run_kernel(INDEX3D, "index3d", grid, block, 0, [out])
    expect = (1000 * np.arange(blocks)[:, None] + np.arange(per_block)[None, :]).ravel()
    np.testing.assert_array_equal(out, expect)


ATOMIC_HIST = r"""
extern "C" __global__ void histogram(const int* keys, int n, unsigned int* bins, float* total) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(&bins[keys[i]], 1u);
        atomicAdd(total, 0.5f);
    }
}
"""


def test_atomic_add():
    n = 3001
    keys = rng.integers(0, 17, n).astype(np.int32)
    bins, total = np.zeros(17, np.uint32), np.zeros(1, np.float32)
    run_kernel(ATOMIC_HIST, "histogram", cdiv(n, 128), 128, 0, [keys, np.int32(n), bins, total])
    np.testing.assert_array_equal(bins, np.bincount(keys, minlength=17))
    assert total[0] == 0.5 * n


def test_same_array_passed_twice_aliases_like_device_memory():
    x = randf(300)
    expect = x + x
    run_kernel(VEC_ADD, "vec_add", 2, 256, 0, [x, x, x, np.int32(300)])  # in place: x = x + x
    np.testing.assert_array_equal(x, expect)


# --------------------------------------------------------------------------
# Shared memory, barriers and warps
# --------------------------------------------------------------------------
BLOCK_SUM = r"""
#define BLOCK 256
extern "C" __global__ void block_sum(const float* __restrict__ x, float* __restrict__ partial, int n) {
    __shared__ float s[BLOCK];
    const int tid = threadIdx.x;
    const int i = blockIdx.x * BLOCK + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    #pragma unroll
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (tid < stride) s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0) partial[blockIdx.x] = s[0];
}

// Same, with the first barrier forgotten.
extern "C" __global__ void block_sum_racy(const float* __restrict__ x, float* __restrict__ partial, int n) {
    __shared__ float s[BLOCK];
    const int tid = threadIdx.x;
    const int i = blockIdx.x * BLOCK + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (tid < stride) s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0) partial[blockIdx.x] = s[0];
}
"""


def block_sums(x, block):
    padded = np.zeros(cdiv(x.size, block) * block, np.float64)
    padded[:x.size] = x
    return padded.reshape(-1, block).sum(axis=1)


def test_block_reduction_static_shared():
    n = 100_003
    x = randf(n)
    partial = np.full(cdiv(n, 256), np.nan, np.float32)
    run_kernel(BLOCK_SUM, "block_sum", partial.size, 256, 0, [x, partial, np.int32(n)])
    np.testing.assert_allclose(partial, block_sums(x, 256), rtol=1e-5, atol=1e-4)


def test_missing_barrier_reads_poisoned_shared_memory():
    # Thread 0 runs up to its first barrier before thread 128 has stored its
    # element, so it adds the NaN poison: the race shows up as NaN.
    x = randf(512)
    partial = np.zeros(2, np.float32)
    run_kernel(BLOCK_SUM, "block_sum_racy", 2, 256, 0, [x, partial, np.int32(512)])
    assert np.isnan(partial).all()


WARP = r"""
__device__ __forceinline__ float warp_sum_xor(float v) {
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;  // every lane holds the sum
}
__device__ __forceinline__ float warp_sum_down(float v) {
    #pragma unroll
    for (int o = warpSize / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;  // lane 0 holds the sum
}

extern "C" __global__ void warp_sums(const float* x, float* xor_out, float* down_out, float* block_out, int n) {
    __shared__ float warp_totals[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
    const float v = i < n ? x[i] : 0.0f;
    xor_out[i] = warp_sum_xor(v);
    const float s = warp_sum_down(v);
    if (lane == 0) {
        down_out[i / warpSize] = s;
        warp_totals[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        float t = lane < blockDim.x / warpSize ? warp_totals[lane] : 0.0f;
        t = warp_sum_down(t);
        if (lane == 0) block_out[blockIdx.x] = t;
    }
}

// Inclusive scan with __shfl_up_sync, broadcast with __shfl_sync, a vote,
// and 8-lane segments with width = 8.
extern "C" __global__ void warp_misc(const float* x, float* scan, float* bcast, float* seg8, unsigned* ballot) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    float v = x[i];
    for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffff, v, o);
        if (lane >= o) v += t;
    }
    scan[i] = v;
    bcast[i] = __shfl_sync(0xffffffff, x[i], 5);
    float s = x[i];
    for (int o = 4; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o, 8);
    seg8[i] = s;
    unsigned b = __ballot_sync(0xffffffff, x[i] > 0.0f);
    if (lane == 0) ballot[i / 32] = b;
}

extern "C" __global__ void shfl_from_exited(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;  // then the full-mask reduction reads exited lanes
    float v = x[i];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    if (threadIdx.x % 32 == 0) out[i / 32] = v;
}
"""


@pytest.mark.parametrize("block", [96, 128])
def test_warp_shuffle_reductions(block):
    n = 1000
    grid = cdiv(n, block)
    threads = grid * block
    x = np.zeros(threads, np.float32)
    x[:n] = randf(n)
    xor_out = np.full(threads, np.nan, np.float32)
    down_out = np.full(threads // 32, np.nan, np.float32)
    block_out = np.full(grid, np.nan, np.float32)
    run_kernel(WARP, "warp_sums", grid, block, 0, [x, xor_out, down_out, block_out, np.int32(n)])
    per_warp = x.astype(np.float64).reshape(-1, 32).sum(axis=1)
    np.testing.assert_allclose(xor_out, np.repeat(per_warp, 32), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(down_out, per_warp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(block_out, block_sums(x, block), rtol=1e-5, atol=1e-4)


def test_warp_scan_broadcast_segments_and_ballot():
    threads = 128
    x = randf(threads)
    scan, bcast, seg8 = (np.full(threads, np.nan, np.float32) for _ in range(3))
    ballot = np.zeros(threads // 32, np.uint32)
    run_kernel(WARP, "warp_misc", 2, 64, 0, [x, scan, bcast, seg8, ballot])
    warps = x.astype(np.float64).reshape(-1, 32)
    np.testing.assert_allclose(scan, np.cumsum(warps, axis=1).ravel(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bcast, np.repeat(x.reshape(-1, 32)[:, 5], 32))
    np.testing.assert_allclose(seg8, np.repeat(x.astype(np.float64).reshape(-1, 8).sum(axis=1), 8),
                               rtol=1e-5, atol=1e-5)
    bits = (x.reshape(-1, 32) > 0).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    np.testing.assert_array_equal(ballot, bits.sum(axis=1).astype(np.uint32))


def test_shuffle_reading_an_exited_lane_is_an_error():
    x, out = randf(64), np.zeros(2, np.float32)
    with pytest.raises(EmulatorError,
                       match=r"shfl_from_exited.*__shfl_down_sync.*reads lane \d+, which has already exited"):
        run_kernel(WARP, "shfl_from_exited", 1, 64, 0, [x, out, np.int32(40)])


DYNAMIC = r"""
extern "C" __global__ void block_reverse(const float* __restrict__ x, float* __restrict__ y, int n) {
    extern __shared__ float s[];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (i < n) s[t] = x[i];
    __syncthreads();
    const int last = min(blockDim.x, n - blockIdx.x * blockDim.x) - 1;
    if (i < n) y[i] = s[last - t];
}

extern __shared__ __align__(16) float4 smem4[];  // file scope, vector type

extern "C" __global__ void pair_sums(const float4* x, float* out) {
    smem4[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    float4 a = smem4[threadIdx.x], b = smem4[blockDim.x - 1 - threadIdx.x];
    out[blockIdx.x * blockDim.x + threadIdx.x] = a.x + a.y + a.z + a.w + b.x + b.y + b.z + b.w;
}

extern "C" __global__ void read_uninitialised(float* dyn_out, float* static_out) {
    extern __shared__ float buf[];
    __shared__ float tile[64];
    if (blockIdx.x == 0) { buf[threadIdx.x] = 1.0f; tile[threadIdx.x] = 1.0f; }  // block 1 writes nothing
    __syncthreads();
    dyn_out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
    static_out[blockIdx.x * blockDim.x + threadIdx.x] = tile[threadIdx.x];
}

extern "C" __global__ void big_shared(float* out) {
    extern __shared__ float s[];
    const int n = 100 * 1024 / 4;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = (float)i;
    __syncthreads();
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += s[n - 1 - i];
    atomicAdd(out, acc);
}
"""


def test_dynamic_shared_memory():
    n, block = 1000, 128
    x, y = randf(n), np.full(n, np.nan, np.float32)
    run_kernel(DYNAMIC, "block_reverse", cdiv(n, block), block, block * 4, [x, y, np.int32(n)])
    expect = np.concatenate([x[s:s + block][::-1] for s in range(0, n, block)])  # last block is partial
    np.testing.assert_array_equal(y, expect)


def test_dynamic_shared_float4_at_file_scope():
    block, grid = 32, 3
    x = randf(grid * block * 4)
    out = np.zeros(grid * block, np.float32)
    run_kernel(DYNAMIC, "pair_sums", grid, block, block * 16, [x, out])
    v = x.reshape(grid, block, 4).sum(axis=2)
    np.testing.assert_allclose(out, (v + v[:, ::-1]).ravel(), rtol=1e-5, atol=1e-5)


def test_uninitialised_shared_memory_reads_nan():
    dyn, stat = np.zeros(128, np.float32), np.zeros(128, np.float32)
    run_kernel(DYNAMIC, "read_uninitialised", 2, 64, 64 * 4, [dyn, stat])
    assert (dyn[:64] == 1).all() and (stat[:64] == 1).all()
    # Block 1 gets fresh (poisoned) shared memory, not block 0's leftovers.
    assert np.isnan(dyn[64:]).all() and np.isnan(stat[64:]).all()


def test_large_dynamic_shared_memory_needs_opt_in():
    out = np.zeros(1, np.float32)
    with pytest.raises(LaunchConfigError, match=r"big_shared.*102400 bytes of dynamic.*allow_large_shared"):
        run_kernel(DYNAMIC, "big_shared", 1, 256, 100 * 1024, [out])
    run_kernel(DYNAMIC, "big_shared", 1, 256, 100 * 1024, [out], allow_large_shared=True)
    n = 100 * 1024 // 4
    assert out[0] == pytest.approx(n * (n - 1) / 2, rel=1e-5)


MATMUL = r"""
#ifndef TILE
#define TILE 16
#endif
extern "C" __global__ void matmul_tiled(const float* __restrict__ A, const float* __restrict__ B,
                                        float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
        const int ka = t * TILE + tx, kb = t * TILE + ty;
        As[ty][tx] = (row < M && ka < K) ? A[row * K + ka] : 0.0f;
        Bs[ty][tx] = (kb < K && col < N) ? B[kb * N + col] : 0.0f;
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < TILE; ++k) acc = fmaf(As[ty][k], Bs[k][tx], acc);
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}
"""

MATMUL_REG = r"""
#define BM 64
#define BN 64
#define BK 8
#define TM 4
#define TN 4
#define THREADS ((BM / TM) * (BN / TN))
extern "C" __global__ void __launch_bounds__(THREADS)
matmul_regtile(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
               int M, int N, int K) {
    __shared__ float As[BK][BM];  // transposed: As[k][m]
    __shared__ float Bs[BK][BN];
    const int tid = threadIdx.x;
    const int tr = tid / (BN / TN), tc = tid % (BN / TN);
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    float acc[TM][TN] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = tid; e < BM * BK; e += THREADS) {
            const int r = e / BK, c = e % BK;
            As[c][r] = (row0 + r < M && k0 + c < K) ? A[(row0 + r) * K + k0 + c] : 0.0f;
        }
        for (int e = tid; e < BK * BN; e += THREADS) {
            const int r = e / BN, c = e % BN;
            Bs[r][c] = (k0 + r < K && col0 + c < N) ? B[(k0 + r) * N + col0 + c] : 0.0f;
        }
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TM], b[TN];
            #pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[k][tr * TM + i];
            #pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[k][tc * TN + j];
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                #pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) {
            const int r = row0 + tr * TM + i, c = col0 + tc * TN + j;
            if (r < M && c < N) C[r * N + c] = acc[i][j];
        }
}
"""


@pytest.mark.parametrize("tile", [16, 32])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (127, 129, 131)])
def test_tiled_matmul(tile, mnk):
    m, n, k = mnk
    a, b = randf(m, k), randf(k, n)
    c = np.full((m, n), np.nan, np.float32)
    src = f"#define TILE {tile}\n" + MATMUL
    t0 = time.perf_counter()
    run_kernel(src, "matmul_tiled", (cdiv(n, tile), cdiv(m, tile)), (tile, tile), 0,
               [a, b, c, np.int32(m), np.int32(n), np.int32(k)])
    assert time.perf_counter() - t0 < 20
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_register_tiled_matmul_odd_sizes():
    m, n, k = 130, 67, 99
    a, b = randf(m, k), randf(k, n)
    c = np.full((m, n), np.nan, np.float32)
    run_kernel(MATMUL_REG, "matmul_regtile", (cdiv(n, 64), cdiv(m, 64)), 256, 0,
               [a, b, c, np.int32(m), np.int32(n), np.int32(k)])
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_launch_bounds_are_enforced():
    a = np.zeros(1, np.float32)
    with pytest.raises(LaunchConfigError, match=r"512 threads per block.*__launch_bounds__\(256\)"):
        run_kernel(MATMUL_REG, "matmul_regtile", 1, 512, 0, [a, a, a, np.int32(1), np.int32(1), np.int32(1)])


EARLY_EXIT = r"""
extern "C" __global__ void early_exit(const int* active, float* out) {
    __shared__ float s[256];
    if (threadIdx.x >= active[0]) return;  // exited threads are not waited for
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    int odd = __syncthreads_count(threadIdx.x & 1);
    out[threadIdx.x] = s[active[0] - 1 - threadIdx.x] + 1000.0f * odd;
}
"""


def test_threads_that_exit_early_are_counted_out_of_barriers():
    active, out = np.array([77], np.int32), np.full(256, -1, np.float32)
    run_kernel(EARLY_EXIT, "early_exit", 1, 256, 0, [active, out])
    expect = np.arange(77)[::-1] + 1000.0 * 38
    np.testing.assert_array_equal(out[:77], expect)
    assert (out[77:] == -1).all()


# --------------------------------------------------------------------------
# Faulty kernels become exceptions
# --------------------------------------------------------------------------
BUGS = r"""
extern "C" __global__ void fill_no_check(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = (float)i;  // no `if (i < n)`
}

extern "C" __global__ void read_before_start(const float* x, float* y) {
    y[threadIdx.x] = x[(int)threadIdx.x - 2000];
}

extern "C" __global__ void barrier_divergence(float* out, int iters) {
    if (threadIdx.x < blockDim.x / 2) {
        for (int i = 0; i < iters; ++i) {
            out[threadIdx.x] += 1.0f;
            __syncthreads();
        }
    } else {
        __syncthreads();  // a different barrier
        out[threadIdx.x] = 2.0f;
    }
}

extern "C" __global__ void shuffle_vs_barrier(float* out) {
    float v = (float)threadIdx.x;
    if ((threadIdx.x & 31) < 16) v += __shfl_xor_sync(0xffffffff, v, 16);  // waits for lanes 16-31...
    else __syncthreads();                                                     // ...which wait here
    out[threadIdx.x] = v;
}

extern "C" __global__ void spin_wait(volatile int* flag, float* out) {
    if (threadIdx.x == 0) {
        while (flag[0] == 0) { }  // waits for thread 1, which never gets to run
        out[0] = 1.0f;
    } else {
        flag[0] = 1;
    }
}

extern "C" __global__ void deep_stack(float* out, int n) {
    volatile float big[40000];  // 160 KB of locals: more than a fiber stack
    for (int i = 0; i < n; ++i) big[i] = (float)i;
    out[threadIdx.x] = big[n - 1];
}

extern "C" __global__ void dyn_overrun(float* out) {
    extern __shared__ float s[];
    s[threadIdx.x * 1024] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[0];
}

extern "C" __global__ void trap_on_negative(const float* x) {
    assert(x[threadIdx.x] >= 0.0f);
}
"""


def test_out_of_bounds_write_is_reported():
    out = np.zeros(1000, np.float32)
    with pytest.raises(EmulatorError, match=r"kernel 'fill_no_check' crashed: out-of-bounds access \(SIGSEGV\)"
                                            r" at byte offset 4000 \(element \[1000\]\) of argument 0 'out'"):
        run_kernel(BUGS, "fill_no_check", 4, 256, 0, [out, np.int32(1000)])
    assert not out.any()


def test_small_out_of_bounds_write_in_padding_is_reported():
    out = np.zeros(1021, np.float32)  # 1021 floats: 12 bytes of padding before the guard page
    with pytest.raises(EmulatorError,
                       match=r"fill_no_check.*out-of-bounds write to argument 0 'out'.*up to 12 bytes past its end"):
        run_kernel(BUGS, "fill_no_check", 1, 1024, 0, [out, np.int32(1021)])


def test_read_before_start_is_reported():
    x, y = randf(10), np.zeros(10, np.float32)
    with pytest.raises(EmulatorError, match=r"out-of-bounds access.*argument 0 'x'.*before its start"):
        run_kernel(BUGS, "read_before_start", 1, 10, 0, [x, y])


def test_barrier_divergence_is_reported_not_hung():
    out = np.zeros(64, np.float32)
    t0 = time.perf_counter()
    with pytest.raises(EmulatorError) as err:
        run_kernel(BUGS, "barrier_divergence", 1, 64, 0, [out, np.int32(5)], timeout=20)
    msg = str(err.value)
    assert "barrier_divergence" in msg and "different __syncthreads() calls" in msg
    loop_line, other_line = line_of(BUGS, "__syncthreads();\n        }"), line_of(BUGS, "// a different barrier")
    assert f"threads 0-31 (32) wait at __syncthreads() on line {loop_line}" in msg
    assert f"threads 32-63 (32) wait at __syncthreads() on line {other_line}" in msg
    assert time.perf_counter() - t0 < 5


def test_deadlock_between_warp_op_and_barrier_is_reported():
    out = np.zeros(32, np.float32)
    with pytest.raises(EmulatorError, match=r"(?s)shuffle_vs_barrier.*deadlock.*__shfl_xor_sync.*__syncthreads"):
        run_kernel(BUGS, "shuffle_vs_barrier", 1, 32, 0, [out], timeout=20)


def test_hang_is_killed_after_timeout():
    flag, out = np.zeros(1, np.int32), np.zeros(1, np.float32)
    with pytest.raises(EmulatorError, match=r"spin_wait.*did not finish within 0.5 s"):
        run_kernel(BUGS, "spin_wait", 1, 2, 0, [flag, out], timeout=0.5)


def test_stack_overflow_is_reported():
    out = np.zeros(4, np.float32)
    with pytest.raises(EmulatorError, match=r"deep_stack.*stack overflow.*64 KiB"):
        run_kernel(BUGS, "deep_stack", 1, 4, 0, [out, np.int32(40000)])
    run_kernel(BUGS, "deep_stack", 1, 4, 0, [out, np.int32(40000)], stack_kib=256)
    assert (out == 39999).all()


def test_dynamic_shared_overrun_is_reported():
    out = np.zeros(8, np.float32)
    with pytest.raises(EmulatorError, match=r"dyn_overrun.*out-of-bounds dynamic shared memory access \(SIGSEGV\) "
                                            r"at byte offset 4096: the launch has 4096 bytes"):
        run_kernel(BUGS, "dyn_overrun", 1, 8, 4096, [out])


def test_device_assert_is_reported():
    x = np.array([1, 2, -3, 4], np.float32)
    with pytest.raises(EmulatorError, match=r"trap_on_negative.*assertion `x\[threadIdx.x\] >= 0.0f` failed"
                                            r".*thread \(2,0,0\)"):
        run_kernel(BUGS, "trap_on_negative", 1, 4, 0, [x])


# --------------------------------------------------------------------------
# Wrong calls are caught before anything runs
# --------------------------------------------------------------------------
def test_wrong_number_of_arguments():
    a = randf(4)
    with pytest.raises(TypeError, match=r"vec_add\(.*\) takes 4 arguments but 3 were given"):
        run_kernel(VEC_ADD, "vec_add", 1, 4, 0, [a, a, a])


@pytest.mark.parametrize("bad, match", [
    ([np.zeros(4), randf(4), randf(4), np.int32(4)], r"argument 0 .*needs a float32 array, got float64"),
    ([randf(4), randf(4), randf(4), 4], r"argument 3 \('int n'\) needs np.int32, got int"),
    ([randf(4), randf(4), randf(4), np.int64(4)], r"argument 3 .*needs np.int32, got np.int64"),
    ([randf(4), randf(4), randf(4), np.array([4], np.int32)], r"argument 3 .*needs a numpy scalar"),
    ([randf(4), np.float32(1), randf(4), np.int32(4)], r"argument 1 .*needs a numpy array"),
])
def test_wrong_argument_kinds(bad, match):
    with pytest.raises(TypeError, match=match):
        run_kernel(VEC_ADD, "vec_add", 1, 4, 0, bad)


def test_non_contiguous_and_unknown_kernel():
    a = randf(8)
    with pytest.raises(ValueError, match="C-contiguous"):
        run_kernel(VEC_ADD, "vec_add", 1, 4, 0, [a[::2], a[::2], randf(4), np.int32(4)])
    with pytest.raises(ValueError, match=r"'vec_sub' is not a __global__ function.*found: vec_add"):
        run_kernel(VEC_ADD, "vec_sub", 1, 4, 0, [])


@pytest.mark.parametrize("grid, block, shared, match", [
    (1, 2048, 0, r"block \(2048, 1, 1\) has 2048 threads; CUDA allows at most 1024"),
    (1, (1, 1, 65), 0, r"block.z = 65 exceeds CUDA's limit of 64"),
    ((1, 70000), 32, 0, r"grid.y = 70000 exceeds CUDA's limit of 65535"),
    (0, 32, 0, r"grid \(0, 1, 1\) has an empty dimension"),
    (1, 32, 49 * 1024, r"50176 bytes of dynamic shared memory = 50176 > 49152"),
])
def test_invalid_launch_is_rejected(grid, block, shared, match):
    a = randf(4)
    with pytest.raises(LaunchConfigError, match=match) as err:
        run_kernel(VEC_ADD, "vec_add", grid, block, shared, [a, a, a, np.int32(4)])
    assert isinstance(err.value, ValueError) and "vec_add" in str(err.value)


def test_static_shared_counts_toward_the_limit():
    src = MATMUL.replace("#ifndef TILE", "#define TILE 32\n#ifndef TILE")  # 32*32*4 + 32*33*4 = 8320 B
    a = randf(1)
    with pytest.raises(LaunchConfigError, match=r"8320 bytes of static \+ 41000 bytes of dynamic"):
        run_kernel(src, "matmul_tiled", 1, (32, 32), 41000, [a, a, a, np.int32(1), np.int32(1), np.int32(1)])


def test_compile_error_points_at_the_kernel_line():
    src = 'extern "C" __global__ void broken(float* x) {\n    x[0] = undefined_name;\n}\n'
    with pytest.raises(CompileError, match=r"broken.cu:2:\d+: error: 'undefined_name' was not declared"):
        run_kernel(src, "broken", 1, 1, 0, [np.zeros(1, np.float32)])


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_EMU_CACHE", str(tmp_path))
    src = VEC_ADD + "\n// cache test\n"
    a = randf(4)
    run_kernel(src, "vec_add", 1, 4, 0, [a, a, a, np.int32(4)])
    assert len(list(tmp_path.glob("vec_add-*.so"))) == 1
    monkeypatch.delenv("CUDA_EMU_CACHE")
    default = emu._cache_dir().resolve()
    assert REPO not in default.parents, "the compile cache must never be inside the repository"
    assert not list(REPO.rglob("vec_add-*.so")), "no compiled kernels may land in the repository"
