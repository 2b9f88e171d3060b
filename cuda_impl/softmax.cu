// softmax.cu - row-wise softmax of a (rows, cols) float32 matrix, numerically stable:
//     y[r, c] = exp(x[r, c] - m_r) / sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]
// and its backward, from the forward's output y and the incoming gradient dy:
//     dx[r, c] = y[r, c] * (dy[r, c] - <dy_r, y_r>)
//
// Forward variants (naive first); each adds one idea:
//   row_per_thread   one thread per row, three passes (max, sum, write). Simple, but
//                    neighbouring threads read addresses `cols` floats apart (no coalescing)
//                    and a 1000-row matrix only occupies 1000 threads.
//   block_shared     one block per row: 256 threads stride over the row together (coalesced),
//                    and combine their partial max / sum with a tree reduction in shared
//                    memory. Still three passes over the row.
//   warp_online      one warp per row; the max and the sum come out of ONE pass ("online
//                    softmax": when a bigger value arrives, rescale the running sum by
//                    exp(old_max - new_max)), combined across lanes with __shfl_xor_sync -
//                    registers only, no shared memory, no __syncthreads. float4 loads when
//                    the row is 16-byte aligned. Two passes: statistics, then write.
//   block_online     for long rows (cols >> block size): a 1024-thread block per row runs the
//                    same online pass, then combines warps through shared memory. Only 2 rows
//                    per SM are in flight, so the second read of a row still hits L2 even
//                    when a row is 64 KiB.
//   block_registers  one block per row, sized so the row fits in registers (<= 32 floats per
//                    thread): read once, reduce, write once - the minimum DRAM traffic
//                    (8 bytes per element) at any number of rows in flight. Up to 32768 cols.
//
// Why two passes cost more than they seem: with many rows in flight, a row read in the
// first pass may be evicted from L2 before the second pass reads it again (8192 warps x
// 32 KiB rows is 256 MiB, the L2 is ~50 MB), so DRAM traffic becomes 12 bytes per element
// instead of 8. block_online limits the rows in flight; block_registers never re-reads.
//
// Backward variants (softmax_backward: y, dy -> dx; one dot product per row, then an
// elementwise pass):
//   row_per_thread   one thread per row: the dot product, then the write. Uncoalesced.
//   warp_dot         one warp per row: lanes stride over the row with float4 loads, the dot
//                    product is combined with __shfl_xor_sync, then every lane writes its
//                    part. Reads y and dy twice (the second read usually hits L2).
//   block_registers  one block per row, the row's y and dy held in registers (<= 16 of each
//                    per thread): read once, write once - 12 bytes per element, the minimum.
//                    Up to 16384 cols; warp_dot takes longer rows.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/softmax.py) by name: tensors x, y (y, dy, dx for the backward) and the
// dims rows, cols.
// Sizes are int (the harness refuses rows x cols >= 2^31); row offsets are size_t.

#define NEG_INF (__int_as_float(0xff800000))   // -infinity: the identity of max()
#define FULL_MASK 0xffffffffu                    // all 32 lanes take part in a shuffle

__device__ __forceinline__ bool aligned16(const void* p)
{
    return ((unsigned long long)p & 15) == 0;
}

__device__ __forceinline__ float warp_max(float v)
{
    // Butterfly: after log2(32) = 5 exchanges every lane holds the max of all 32.
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// Online softmax: (m, s) is the running max and the sum of exp(x - m) so far.
// One exp per element: either the new element is below the max (add its exp), or it is
// the new max (rescale the old sum, add exp(0) = 1).
__device__ __forceinline__ void online_update(float& m, float& s, float v)
{
    if (v > m) {
        s = s * expf(m - v) + 1.0f;      // m = -inf at the start: expf(-inf) = 0, no NaN
        m = v;
    } else {
        s += expf(v - m);
    }
}

// Merge two partial (max, sum) pairs. The `==` tests skip an exp when nothing changes and
// keep exp(-inf - -inf) = NaN away when both sides are still empty.
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2)
{
    float mn = fmaxf(m, m2);
    s = (m == mn ? s : s * expf(m - mn)) + (m2 == mn ? s2 : s2 * expf(m2 - mn));
    m = mn;
}

__device__ __forceinline__ void warp_online_merge(float& m, float& s)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, offset);
        float s2 = __shfl_xor_sync(FULL_MASK, s, offset);
        online_merge(m, s, m2, s2);
    }
}

// ------------------------------------------------------------------ 1. row_per_thread
// launch: grid=cdiv(rows, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
softmax_row_per_thread(const float* __restrict__ x, float* __restrict__ y, int rows, int cols)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    float m = xr[0];                                 // pass 1: the max (cols >= 1)
    for (int c = 1; c < cols; ++c) m = fmaxf(m, xr[c]);
    float s = 0.0f;                                  // pass 2: the normaliser
    for (int c = 0; c < cols; ++c) s += expf(xr[c] - m);
    float inv = 1.0f / s;                            // s >= 1: the max contributes exp(0)
    for (int c = 0; c < cols; ++c) yr[c] = expf(xr[c] - m) * inv;   // pass 3: write
}

// ------------------------------------------------------------------ 2. block_shared
// Dynamic shared memory: blockDim.x floats (a power of two), one partial per thread.
// launch: grid=rows block=256 smem=256 * 4
extern "C" __global__ void __launch_bounds__(256)
softmax_block_shared(const float* __restrict__ x, float* __restrict__ y, int rows, int cols)
{
    extern __shared__ float partial[];
    const int tid = threadIdx.x;
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;

    // Pass 1: each thread's max over a strided slice (thread t reads t, t+256, ...: the
    // block reads whole 128-byte lines), then a tree: 256 -> 128 -> ... -> 1 partials.
    float m = NEG_INF;
    for (int c = tid; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
    partial[tid] = m;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half) partial[tid] = fmaxf(partial[tid], partial[tid + half]);
        __syncthreads();                             // every level reads the previous one
    }
    m = partial[0];
    __syncthreads();                                 // all have read partial[0] before reuse

    // Pass 2: the same shape of reduction for the sum of exp(x - m).
    float s = 0.0f;
    for (int c = tid; c < cols; c += blockDim.x) s += expf(xr[c] - m);
    partial[tid] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    float inv = 1.0f / partial[0];

    for (int c = tid; c < cols; c += blockDim.x) yr[c] = expf(xr[c] - m) * inv;   // pass 3
}

// ------------------------------------------------------------------ 3. warp_online
// 256 threads = 8 warps = 8 rows per block.
// launch: grid=cdiv(rows, 8) block=256
extern "C" __global__ void __launch_bounds__(256)
softmax_warp_online(const float* __restrict__ x, float* __restrict__ y, int rows, int cols)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;                           // the whole warp leaves together
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    // A row starts on a 16-byte boundary only if cols % 4 == 0 (and the buffers are aligned).
    const bool vec = (cols % 4 == 0) && aligned16(x) && aligned16(y);

    float m = NEG_INF, s = 0.0f;                     // this lane's running (max, sum)
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 v = x4[i];
            online_update(m, s, v.x); online_update(m, s, v.y);
            online_update(m, s, v.z); online_update(m, s, v.w);
        }
    } else {
        for (int c = lane; c < cols; c += 32) online_update(m, s, xr[c]);
    }
    warp_online_merge(m, s);                         // now every lane has the row's (max, sum)
    const float inv = 1.0f / s;

    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        float4* y4 = reinterpret_cast<float4*>(yr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 v = x4[i];
            y4[i] = make_float4(expf(v.x - m) * inv, expf(v.y - m) * inv,
                                expf(v.z - m) * inv, expf(v.w - m) * inv);
        }
    } else {
        for (int c = lane; c < cols; c += 32) yr[c] = expf(xr[c] - m) * inv;
    }
}

// ------------------------------------------------------------------ 4. block_online
// 1024 threads per row; blockDim.x must be a multiple of 32.
// launch: grid=rows block=1024
extern "C" __global__ void __launch_bounds__(1024)
softmax_block_online(const float* __restrict__ x, float* __restrict__ y, int rows, int cols)
{
    __shared__ float warp_m[32], warp_s[32];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int nwarps = blockDim.x / 32;
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    const bool vec = (cols % 4 == 0) && aligned16(x) && aligned16(y);

    float m = NEG_INF, s = 0.0f;
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (int i = tid; i < cols / 4; i += blockDim.x) {
            float4 v = x4[i];
            online_update(m, s, v.x); online_update(m, s, v.y);
            online_update(m, s, v.z); online_update(m, s, v.w);
        }
    } else {
        for (int c = tid; c < cols; c += blockDim.x) online_update(m, s, xr[c]);
    }
    // Two levels: lanes within a warp (shuffles), then warps (through shared memory).
    warp_online_merge(m, s);
    if (lane == 0) { warp_m[warp] = m; warp_s[warp] = s; }
    __syncthreads();
    m = lane < nwarps ? warp_m[lane] : NEG_INF;      // every warp merges the 32 partials
    s = lane < nwarps ? warp_s[lane] : 0.0f;         // itself: no third barrier needed
    warp_online_merge(m, s);
    const float inv = 1.0f / s;

    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        float4* y4 = reinterpret_cast<float4*>(yr);
        for (int i = tid; i < cols / 4; i += blockDim.x) {
            float4 v = x4[i];
            y4[i] = make_float4(expf(v.x - m) * inv, expf(v.y - m) * inv,
                                expf(v.z - m) * inv, expf(v.w - m) * inv);
        }
    } else {
        for (int c = tid; c < cols; c += blockDim.x) yr[c] = expf(xr[c] - m) * inv;
    }
}

// ------------------------------------------------------------------ 5. block_registers
// Each thread keeps up to REG_FLOATS values of the row in registers. The launch line picks
// blockDim.x with blockDim.x * REG_FLOATS >= cols: whole warps, at least 4 of them (small
// rows still fill an SM with blocks), at most 1024 threads - so at most 32768 columns.
#define REG_FLOATS 32                  // 32 registers of data per thread; 8 float4 slots

// Reduce one value per thread to the block's max / sum; every thread gets the result.
// Warp shuffles first, then one warp combines the per-warp results kept in shared memory.
__device__ __forceinline__ float block_max(float v, float* shared33)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_max(v);
    if (lane == 0) shared33[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = warp_max(lane < (int)(blockDim.x / 32) ? shared33[lane] : NEG_INF);
        if (lane == 0) shared33[32] = t;
    }
    __syncthreads();
    return shared33[32];
}

__device__ __forceinline__ float block_sum(float v, float* shared33)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0) shared33[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = warp_sum(lane < (int)(blockDim.x / 32) ? shared33[lane] : 0.0f);
        if (lane == 0) shared33[32] = t;
    }
    __syncthreads();
    return shared33[32];
}

// launch: grid=rows block=min(1024, max(128, 32 * cdiv(cdiv(cols, REG_FLOATS), 32)))
// requires: cols <= 1024 * REG_FLOATS -- keeps a row in registers: at most 32768 columns (1024 threads x 32); block_online takes longer rows
extern "C" __global__ void __launch_bounds__(1024)
softmax_block_registers(const float* __restrict__ x, float* __restrict__ y, int rows, int cols)
{
    __shared__ float red[33];
    const int tid = threadIdx.x, nt = blockDim.x;
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    const bool vec = (cols % 4 == 0) && aligned16(x) && aligned16(y);
    if (cols > nt * REG_FLOATS) {                    // the launch line refuses this; if it
        for (int c = tid; c < cols; c += nt) yr[c] = __int_as_float(0x7fffffff);  // did: NaN,
        return;                                      // so verification fails loudly
    }

    // Load the row once. With constant trip counts and full unrolling, v[] stays in
    // registers (an array indexed by a runtime value would be spilled to local memory).
    // Slots past the end of the row hold -inf: they vanish from max() and exp().
    float v[REG_FLOATS];
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
#pragma unroll
        for (int k = 0; k < REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            float4 t = i < cols / 4 ? x4[i] : make_float4(NEG_INF, NEG_INF, NEG_INF, NEG_INF);
            v[4 * k] = t.x; v[4 * k + 1] = t.y; v[4 * k + 2] = t.z; v[4 * k + 3] = t.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < REG_FLOATS; ++k) {
            int c = tid + k * nt;
            v[k] = c < cols ? xr[c] : NEG_INF;
        }
    }

    float m = NEG_INF;
#pragma unroll
    for (int k = 0; k < REG_FLOATS; ++k) m = fmaxf(m, v[k]);
    m = block_max(m, red);

    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < REG_FLOATS; ++k) { v[k] = expf(v[k] - m); s += v[k]; }   // exp(-inf) = 0
    const float inv = 1.0f / block_sum(s, red);

    if (vec) {
        float4* y4 = reinterpret_cast<float4*>(yr);
#pragma unroll
        for (int k = 0; k < REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            if (i < cols / 4)
                y4[i] = make_float4(v[4 * k] * inv, v[4 * k + 1] * inv, v[4 * k + 2] * inv, v[4 * k + 3] * inv);
        }
    } else {
#pragma unroll
        for (int k = 0; k < REG_FLOATS; ++k) {
            int c = tid + k * nt;
            if (c < cols) yr[c] = v[k] * inv;
        }
    }
}

// ================================================================== softmax_backward
// dx = y * (dy - <dy, y>): the dot product <dy, y> is a sum of `cols` products, rounded at
// the size of the products it adds (the declared error scale: y * (|dy| + sum |dy y|)).

// ------------------------------------------------------------------ 1. row_per_thread
// launch: grid=cdiv(rows, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
softmax_backward_row_per_thread(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                int rows, int cols)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* yr = y + (size_t)r * cols;
    const float* gr = dy + (size_t)r * cols;
    float* dr = dx + (size_t)r * cols;
    float dot = 0.0f;
    for (int c = 0; c < cols; ++c) dot += gr[c] * yr[c];
    for (int c = 0; c < cols; ++c) dr[c] = yr[c] * (gr[c] - dot);
}

// ------------------------------------------------------------------ 2. warp_dot
// 256 threads = 8 warps = 8 rows per block.
// launch: grid=cdiv(rows, 8) block=256
extern "C" __global__ void __launch_bounds__(256)
softmax_backward_warp_dot(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                          int rows, int cols)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;                           // the whole warp leaves together
    const float* yr = y + (size_t)r * cols;
    const float* gr = dy + (size_t)r * cols;
    float* dr = dx + (size_t)r * cols;
    const bool vec = (cols % 4 == 0) && aligned16(y) && aligned16(dy) && aligned16(dx);
    float dot = 0.0f;
    if (vec) {
        const float4* y4 = reinterpret_cast<const float4*>(yr);
        const float4* g4 = reinterpret_cast<const float4*>(gr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 a = y4[i], g = g4[i];
            // One running sum: ptxas spills a register on this kernel when the four
            // products are paired up first ((a + b) + (c + d)), and not with this.
            dot += g.x * a.x; dot += g.y * a.y; dot += g.z * a.z; dot += g.w * a.w;
        }
    } else {
        for (int c = lane; c < cols; c += 32) dot += gr[c] * yr[c];
    }
    dot = warp_sum(dot);                             // every lane: the row's <dy, y>
    if (vec) {
        const float4* y4 = reinterpret_cast<const float4*>(yr);
        const float4* g4 = reinterpret_cast<const float4*>(gr);
        float4* d4 = reinterpret_cast<float4*>(dr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 a = y4[i], g = g4[i];
            d4[i] = make_float4(a.x * (g.x - dot), a.y * (g.y - dot), a.z * (g.z - dot), a.w * (g.w - dot));
        }
    } else {
        for (int c = lane; c < cols; c += 32) dr[c] = yr[c] * (gr[c] - dot);
    }
}

// ------------------------------------------------------------------ 3. block_registers
// Two arrays per row now (y and dy): BWD_REG_FLOATS = 16 of each per thread, 32 registers
// of data, the same budget as the forward's block_registers. Slots past the end hold 0.
#define BWD_REG_FLOATS 16

// launch: grid=rows block=min(1024, max(128, 32 * cdiv(cdiv(cols, BWD_REG_FLOATS), 32)))
// requires: cols <= 1024 * BWD_REG_FLOATS -- keeps y and dy of a row in registers: at most 16384 columns (1024 threads x 16); warp_dot takes longer rows
extern "C" __global__ void __launch_bounds__(1024)
softmax_backward_block_registers(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                 int rows, int cols)
{
    __shared__ float red[33];
    const int tid = threadIdx.x, nt = blockDim.x;
    const float* yr = y + (size_t)blockIdx.x * cols;
    const float* gr = dy + (size_t)blockIdx.x * cols;
    float* dr = dx + (size_t)blockIdx.x * cols;
    const bool vec = (cols % 4 == 0) && aligned16(y) && aligned16(dy) && aligned16(dx);
    if (cols > nt * BWD_REG_FLOATS) {                // the launch line refuses this; if it
        for (int c = tid; c < cols; c += nt) dr[c] = __int_as_float(0x7fffffff);   // did: NaN
        return;
    }
    float a[BWD_REG_FLOATS], g[BWD_REG_FLOATS];      // constant indices only: registers
    if (vec) {
        const float4* y4 = reinterpret_cast<const float4*>(yr);
        const float4* g4 = reinterpret_cast<const float4*>(gr);
#pragma unroll
        for (int k = 0; k < BWD_REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            float4 t = i < cols / 4 ? y4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float4 u = i < cols / 4 ? g4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            a[4 * k] = t.x; a[4 * k + 1] = t.y; a[4 * k + 2] = t.z; a[4 * k + 3] = t.w;
            g[4 * k] = u.x; g[4 * k + 1] = u.y; g[4 * k + 2] = u.z; g[4 * k + 3] = u.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < BWD_REG_FLOATS; ++k) {
            int c = tid + k * nt;
            a[k] = c < cols ? yr[c] : 0.0f;
            g[k] = c < cols ? gr[c] : 0.0f;
        }
    }
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < BWD_REG_FLOATS; ++k) dot += g[k] * a[k];     // padding adds 0
    dot = block_sum(dot, red);

    if (vec) {
        float4* d4 = reinterpret_cast<float4*>(dr);
#pragma unroll
        for (int k = 0; k < BWD_REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            if (i < cols / 4)
                d4[i] = make_float4(a[4 * k] * (g[4 * k] - dot), a[4 * k + 1] * (g[4 * k + 1] - dot),
                                    a[4 * k + 2] * (g[4 * k + 2] - dot), a[4 * k + 3] * (g[4 * k + 3] - dot));
        }
    } else {
#pragma unroll
        for (int k = 0; k < BWD_REG_FLOATS; ++k) {
            int c = tid + k * nt;
            if (c < cols) dr[c] = a[k] * (g[k] - dot);
        }
    }
}
