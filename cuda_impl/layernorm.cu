// layernorm.cu - row-wise layer normalisation of a (rows, cols) float32 matrix:
//     y[r, c] = (x[r, c] - mean_r) * rstd_r * gamma[c] + beta[c]
//     mean_r = sum_c x[r, c] / cols,  var_r = sum_c (x[r, c] - mean_r)^2 / cols  (biased),
//     rstd_r = 1 / sqrt(var_r + eps)                 (eps: a kernel argument, default 1e-5)
// and its backward (layernorm_backward: x, gamma, dy, eps -> dx, dgamma, dbeta), from
// xhat = (x - mean) * rstd and g = dy * gamma, the statistics recomputed from x:
//     dx[r, c]  = rstd_r * (g - mean_c(g) - xhat * mean_c(g * xhat))      a reduction per row
//     dgamma[c] = sum_r dy * xhat,   dbeta[c] = sum_r dy                   a reduction per column
//
// Forward variants (naive first); each adds one idea:
//   row_per_thread   one thread per row, two passes for the statistics (mean, then squared
//                    deviations from it) and one to write. Uncoalesced: neighbouring threads
//                    read addresses `cols` floats apart.
//   block_shared     one block per row: 256 threads stride over the row together (coalesced)
//                    and combine partial sums with a tree reduction in shared memory.
//   warp_welford     one warp per row, float4 loads, and ONE pass for mean and variance:
//                    Welford's running (count, mean, M2), merged across lanes with
//                    __shfl_xor_sync by Chan's formula. Then one pass to write.
//   block_registers  one block per row, sized so the row fits in registers (<= 32 floats per
//                    thread): read once, then the exact two-pass mean / variance runs on
//                    registers for free, write once - minimum DRAM traffic. Up to 32768 cols.
//
// The shift, in every variant. Rows with a large offset and a small spread (1e4 + 1e-2 *
// noise) are where float32 layernorm goes wrong: even correctly rounded, the row's float32
// mean can be half an ulp of 1e4 (5e-4) away from the true mean, 5 % of the spread, and
// x - mean carries that error into every output. So each row is first shifted by its own first element x0 = x[r, 0]:
// d = x - x0 is EXACT wherever x is within a factor 2 of x0 (Sterbenz's lemma), so the
// offset is gone before anything is rounded, and d is exactly 0 on a constant row. The
// variance of d is the variance of x, mean_x = x0 + mean_d, and the output is written as
// ((x - x0) - mean_d) * rstd - never as x - (x0 + mean_d), whose sum would round at the
// offset's scale all over again.
//
// Why not one pass of E[x^2] - E[x]^2: with x = 100 + N(0, 1), E[x^2] ~ 10001 and E[x]^2 ~
// 10000 agree in their first 4-5 digits, and float32 keeps 7: the difference (the variance,
// ~1) keeps 2-3 correct digits, or comes out negative. Subtracting the mean first (two-pass)
// or updating around a running mean (Welford) avoids the cancellation.
//
// Backward variants. The two reductions run in different directions (along a row for dx,
// down a column for dgamma and dbeta), so every variant is two kernels (steps):
//   row_per_thread  __rows: one thread per row recomputes the statistics (with the shift),
//                   writes dx and saves (x0, mean, rstd) of its row to scratch;
//                   __columns: one thread per column re-reads x and dy and sums dy * xhat
//                   and dy down its column. Simple; uncoalesced rows, only `cols` threads.
//   warp_per_row    __rows: one warp per row, shuffle reductions (coalesced);
//                   __columns: one block per 32-column strip, 8 warps splitting the rows,
//                   their partial sums added in shared memory. x and dy are still read twice:
//                   once per kernel.
//   fused           __rows: ONE pass over x and dy. A block keeps the columns' running dgamma
//                   and dbeta in registers while it walks its rows (each thread owns the same
//                   columns of every row), computes dx of each row on the way, and writes its
//                   partial sums to scratch at the end; __columns adds the blocks' partials,
//                   block 0 first. The second read of x and dy is gone; the partials cost
//                   2 floats per column per block. The row lives in registers (<= 8 values per
//                   thread): up to 8192 columns.
// Every sum is in a fixed order (no atomics): the same bits on every run and every GPU, so a
// training run is reproducible.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/layernorm.py) by name: tensors x, gamma, beta, y (x, gamma, dy, dx,
// dgamma, dbeta for the backward), the dims rows, cols, the scalar eps, and the backward's
// scratch buffers (`// scratch:` lines). Sizes are int (the harness refuses rows x cols >= 2^31).

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ bool aligned16(const void* p)
{
    return ((unsigned long long)p & 15) == 0;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// ------------------------------------------------------------------ 1. row_per_thread
// launch: grid=cdiv(rows, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
layernorm_row_per_thread(const float* __restrict__ x, const float* __restrict__ gamma,
                         const float* __restrict__ beta, float* __restrict__ y, int rows, int cols,
                         float eps)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    // Statistics of d = x - x0 (see the header). The shifted terms are also small, so a
    // running sum of thousands of them, one by one, keeps the low digits of each.
    const float x0 = xr[0];
    float sum = 0.0f;
    for (int c = 0; c < cols; ++c) sum += xr[c] - x0;
    const float mean = sum / cols;                   // the mean of d, not of x
    float sq = 0.0f;
    for (int c = 0; c < cols; ++c) { float d = (xr[c] - x0) - mean; sq += d * d; }
    const float rstd = rsqrtf(sq / cols + eps);
    for (int c = 0; c < cols; ++c) yr[c] = ((xr[c] - x0) - mean) * rstd * gamma[c] + beta[c];
}

// ------------------------------------------------------------------ 2. block_shared
// Dynamic shared memory: blockDim.x floats (a power of two), one partial per thread.
__device__ __forceinline__ float block_tree_sum(float v, float* partial)
{
    const int tid = threadIdx.x;
    partial[tid] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half) partial[tid] += partial[tid + half];
        __syncthreads();                             // each level reads the previous one
    }
    float total = partial[0];
    __syncthreads();                                 // everyone has it before `partial` is reused
    return total;
}

// launch: grid=rows block=256 smem=256 * 4
extern "C" __global__ void __launch_bounds__(256)
layernorm_block_shared(const float* __restrict__ x, const float* __restrict__ gamma,
                       const float* __restrict__ beta, float* __restrict__ y, int rows, int cols,
                       float eps)
{
    extern __shared__ float partial[];
    const int tid = threadIdx.x;
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    const float x0 = xr[0];                          // the shift: one word, read by all (a broadcast)

    float sum = 0.0f;                                // thread t reads t, t+256, ...: coalesced
    for (int c = tid; c < cols; c += blockDim.x) sum += xr[c] - x0;
    const float mean = block_tree_sum(sum, partial) / cols;         // mean of d = x - x0

    float sq = 0.0f;
    for (int c = tid; c < cols; c += blockDim.x) { float d = (xr[c] - x0) - mean; sq += d * d; }
    const float rstd = rsqrtf(block_tree_sum(sq, partial) / cols + eps);

    for (int c = tid; c < cols; c += blockDim.x)
        yr[c] = ((xr[c] - x0) - mean) * rstd * gamma[c] + beta[c];
}

// ------------------------------------------------------------------ 3. warp_welford
// Welford state: n values seen, their mean, and M2 = sum of squared deviations from it.
// Chan et al.'s merge of two states is exact algebra, so lanes can work on disjoint slices
// and combine at the end. Counts are floats: they stay exact up to 2^24.
struct Welford { float n, mean, m2; };

__device__ __forceinline__ Welford welford_merge(Welford a, Welford b)
{
    if (b.n == 0.0f) return a;                       // empty sides: no 0/0
    if (a.n == 0.0f) return b;
    float n = a.n + b.n;
    float delta = b.mean - a.mean;
    float wb = b.n / n;
    Welford r;
    r.n = n;
    r.mean = a.mean + delta * wb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.n * wb;
    return r;
}

// Four values at once: their exact-ish two-pass statistics, merged in with one division.
// ((a + b) + (c + d)) keeps a constant chunk's mean exact (v + v + v may round, 2v + 2v not).
__device__ __forceinline__ Welford welford_add4(Welford w, float4 v)
{
    Welford c;
    c.n = 4.0f;
    c.mean = ((v.x + v.y) + (v.z + v.w)) * 0.25f;
    float dx = v.x - c.mean, dy = v.y - c.mean, dz = v.z - c.mean, dw = v.w - c.mean;
    c.m2 = (dx * dx + dy * dy) + (dz * dz + dw * dw);
    return welford_merge(w, c);
}

__device__ __forceinline__ Welford welford_add1(Welford w, float v)
{
    w.n += 1.0f;
    float delta = v - w.mean;
    w.mean += delta / w.n;
    w.m2 += delta * (v - w.mean);
    return w;
}

__device__ __forceinline__ Welford warp_welford(Welford w)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        Welford o;
        o.n = __shfl_xor_sync(FULL_MASK, w.n, offset);
        o.mean = __shfl_xor_sync(FULL_MASK, w.mean, offset);
        o.m2 = __shfl_xor_sync(FULL_MASK, w.m2, offset);
        w = welford_merge(w, o);
    }
    return w;
}

// 256 threads = 8 warps = 8 rows per block. Welford runs on d = x - x0 (see the header).
// launch: grid=cdiv(rows, 8) block=256
extern "C" __global__ void __launch_bounds__(256)
layernorm_warp_welford(const float* __restrict__ x, const float* __restrict__ gamma,
                       const float* __restrict__ beta, float* __restrict__ y, int rows, int cols,
                       float eps)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;                           // the whole warp leaves together
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    // Rows start 16-byte aligned only when cols % 4 == 0; gamma and beta must be aligned too.
    const bool vec = (cols % 4 == 0) && aligned16(x) && aligned16(y) && aligned16(gamma) && aligned16(beta);
    const float x0 = xr[0];

    Welford w = {0.0f, 0.0f, 0.0f};
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 v = x4[i];
            w = welford_add4(w, make_float4(v.x - x0, v.y - x0, v.z - x0, v.w - x0));
        }
    } else {
        for (int c = lane; c < cols; c += 32) w = welford_add1(w, xr[c] - x0);
    }
    w = warp_welford(w);                             // every lane: the whole row's statistics
    const float mean = w.mean;                       // of d
    const float rstd = rsqrtf(w.m2 / cols + eps);

    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        const float4* g4 = reinterpret_cast<const float4*>(gamma);
        const float4* b4 = reinterpret_cast<const float4*>(beta);
        float4* y4 = reinterpret_cast<float4*>(yr);
        for (int i = lane; i < cols / 4; i += 32) {
            float4 v = x4[i], g = g4[i], b = b4[i];
            y4[i] = make_float4(((v.x - x0) - mean) * rstd * g.x + b.x, ((v.y - x0) - mean) * rstd * g.y + b.y,
                                ((v.z - x0) - mean) * rstd * g.z + b.z, ((v.w - x0) - mean) * rstd * g.w + b.w);
        }
    } else {
        for (int c = lane; c < cols; c += 32) yr[c] = ((xr[c] - x0) - mean) * rstd * gamma[c] + beta[c];
    }
}

// ------------------------------------------------------------------ 4. block_registers
// Each thread keeps up to REG_FLOATS values of the row in registers. The launch line picks
// blockDim.x with blockDim.x * REG_FLOATS >= cols: whole warps, at least 4 of them (small
// rows still fill an SM with blocks), at most 1024 threads - so at most 32768 columns.
#define REG_FLOATS 32                  // 32 registers of data per thread; 8 float4 slots

// Sum one value per thread over the block; every thread gets the result. Shuffles within
// each warp, then warp 0 adds the per-warp sums left in shared memory.
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
// requires: cols <= 1024 * REG_FLOATS -- keeps a row in registers: at most 32768 columns (1024 threads x 32); warp_welford takes longer rows
extern "C" __global__ void __launch_bounds__(1024)
layernorm_block_registers(const float* __restrict__ x, const float* __restrict__ gamma,
                          const float* __restrict__ beta, float* __restrict__ y, int rows, int cols,
                          float eps)
{
    __shared__ float red[33];
    const int tid = threadIdx.x, nt = blockDim.x;
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    const bool vec = (cols % 4 == 0) && aligned16(x) && aligned16(y) && aligned16(gamma) && aligned16(beta);
    if (cols > nt * REG_FLOATS) {                    // the launch line refuses this; if it
        for (int c = tid; c < cols; c += nt) yr[c] = __int_as_float(0x7fffffff);  // did: NaN,
        return;                                      // so verification fails loudly
    }
    const float x0 = xr[0];                          // the shift (see the header)

    // Load the row once, shifted: v[] holds d = x - x0, and slots past the end hold 0 (so
    // they add nothing to the sum; the squares skip them by index below). Constant trip
    // counts + full unrolling keep v[] in registers.
    float v[REG_FLOATS];
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
#pragma unroll
        for (int k = 0; k < REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            float4 t = i < cols / 4 ? x4[i] : make_float4(x0, x0, x0, x0);
            v[4 * k] = t.x - x0; v[4 * k + 1] = t.y - x0; v[4 * k + 2] = t.z - x0; v[4 * k + 3] = t.w - x0;
        }
    } else {
#pragma unroll
        for (int k = 0; k < REG_FLOATS; ++k) {
            int c = tid + k * nt;
            v[k] = c < cols ? xr[c] - x0 : 0.0f;
        }
    }
    // Which slots hold real columns: slot k is column 4 * (tid + (k/4) * nt) + k % 4 when
    // vectorised, tid + k * nt otherwise.
#define LN_SLOT_VALID(k) (vec ? (tid + ((k) / 4) * nt) < cols / 4 : (tid + (k) * nt) < cols)

    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < REG_FLOATS; ++k) sum += v[k];                   // padding is 0
    const float mean = block_sum(sum, red) / cols;                      // mean of d

    float sq = 0.0f;                                                    // second pass: registers
#pragma unroll
    for (int k = 0; k < REG_FLOATS; ++k) {
        float d = v[k] - mean;
        if (LN_SLOT_VALID(k)) sq += d * d;
    }
    const float rstd = rsqrtf(block_sum(sq, red) / cols + eps);

    if (vec) {
        const float4* g4 = reinterpret_cast<const float4*>(gamma);
        const float4* b4 = reinterpret_cast<const float4*>(beta);
        float4* y4 = reinterpret_cast<float4*>(yr);
#pragma unroll
        for (int k = 0; k < REG_FLOATS / 4; ++k) {
            int i = tid + k * nt;
            if (i < cols / 4) {
                float4 g = g4[i], b = b4[i];
                y4[i] = make_float4((v[4 * k] - mean) * rstd * g.x + b.x, (v[4 * k + 1] - mean) * rstd * g.y + b.y,
                                    (v[4 * k + 2] - mean) * rstd * g.z + b.z, (v[4 * k + 3] - mean) * rstd * g.w + b.w);
            }
        }
    } else {
#pragma unroll
        for (int k = 0; k < REG_FLOATS; ++k) {
            int c = tid + k * nt;
            if (c < cols) yr[c] = (v[k] - mean) * rstd * gamma[c] + beta[c];
        }
    }
#undef LN_SLOT_VALID
}

// ================================================================== layernorm_backward
// The statistics are the forward's, shift included: d = x - x0 with x0 = x[r, 0], mean and
// rstd of d, so that a row offset by 1e4 with a spread of 1e-2 differentiates as well as one
// at zero, and xhat = ((x - x0) - mean) * rstd is bit-for-bit what the forward computes.
//   dx = rstd * (g - sum(g) / cols - xhat * (sum(g * xhat) / cols)),  g = dy * gamma

__device__ __forceinline__ void block_sum2(float& a, float& b, float* shared66)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { shared66[warp] = a; shared66[33 + warp] = b; }
    __syncthreads();
    if (warp == 0) {
        const bool in = lane < (int)(blockDim.x / 32);
        float ta = warp_sum(in ? shared66[lane] : 0.0f);
        float tb = warp_sum(in ? shared66[33 + lane] : 0.0f);
        if (lane == 0) { shared66[32] = ta; shared66[65] = tb; }
    }
    __syncthreads();
    a = shared66[32];
    b = shared66[65];
    __syncthreads();                                 // read before the next call overwrites
}

// ------------------------------------------------------------------ 1. row_per_thread
// launch: grid=cdiv(rows, 256) block=256
// scratch: stats float (rows, 3) -- each row's shift x0, mean of x - x0, and rstd
extern "C" __global__ void __launch_bounds__(256)
layernorm_backward_row_per_thread__rows(const float* __restrict__ x, const float* __restrict__ gamma,
                                        const float* __restrict__ dy, float* __restrict__ dx,
                                        float* __restrict__ stats, int rows, int cols, float eps)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * cols;
    const float* gr = dy + (size_t)r * cols;
    float* dr = dx + (size_t)r * cols;
    const float x0 = xr[0];
    float sum = 0.0f;
    for (int c = 0; c < cols; ++c) sum += xr[c] - x0;
    const float mean = sum / cols;
    float sq = 0.0f;
    for (int c = 0; c < cols; ++c) { float d = (xr[c] - x0) - mean; sq += d * d; }
    const float rstd = rsqrtf(sq / cols + eps);
    float sg = 0.0f, sgx = 0.0f;                     // sum(g), sum(g * xhat)
    for (int c = 0; c < cols; ++c) {
        float g = gr[c] * gamma[c];
        sg += g;
        sgx += g * (((xr[c] - x0) - mean) * rstd);
    }
    const float mg = sg / cols, mgx = sgx / cols;
    for (int c = 0; c < cols; ++c) {
        float xhat = ((xr[c] - x0) - mean) * rstd;
        dr[c] = rstd * ((gr[c] * gamma[c] - mg) - xhat * mgx);
    }
    stats[3 * (size_t)r] = x0;
    stats[3 * (size_t)r + 1] = mean;
    stats[3 * (size_t)r + 2] = rstd;
}

// launch: grid=cdiv(cols, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
layernorm_backward_row_per_thread__columns(const float* __restrict__ x, const float* __restrict__ dy,
                                           const float* __restrict__ stats, float* __restrict__ dgamma,
                                           float* __restrict__ dbeta, int rows, int cols)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float dg = 0.0f, db = 0.0f;
    for (int r = 0; r < rows; ++r) {                 // a warp reads 32 neighbouring columns
        const size_t i = (size_t)r * cols + c;
        const float xhat = ((x[i] - stats[3 * (size_t)r]) - stats[3 * (size_t)r + 1]) * stats[3 * (size_t)r + 2];
        dg += dy[i] * xhat;
        db += dy[i];
    }
    dgamma[c] = dg;
    dbeta[c] = db;
}

// ------------------------------------------------------------------ 2. warp_per_row
// 256 threads = 8 warps = 8 rows per block; two-pass statistics from the row (L1/L2-hot).
// launch: grid=cdiv(rows, 8) block=256
// scratch: stats float (rows, 3) -- each row's shift x0, mean of x - x0, and rstd
extern "C" __global__ void __launch_bounds__(256)
layernorm_backward_warp_per_row__rows(const float* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ dy, float* __restrict__ dx,
                                      float* __restrict__ stats, int rows, int cols, float eps)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;                           // the whole warp leaves together
    const float* xr = x + (size_t)r * cols;
    const float* gr = dy + (size_t)r * cols;
    float* dr = dx + (size_t)r * cols;
    const float x0 = xr[0];
    float sum = 0.0f;
    for (int c = lane; c < cols; c += 32) sum += xr[c] - x0;
    const float mean = warp_sum(sum) / cols;
    float sq = 0.0f;
    for (int c = lane; c < cols; c += 32) { float d = (xr[c] - x0) - mean; sq += d * d; }
    const float rstd = rsqrtf(warp_sum(sq) / cols + eps);
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float g = gr[c] * gamma[c];
        sg += g;
        sgx += g * (((xr[c] - x0) - mean) * rstd);
    }
    const float mg = warp_sum(sg) / cols, mgx = warp_sum(sgx) / cols;
    for (int c = lane; c < cols; c += 32) {
        float xhat = ((xr[c] - x0) - mean) * rstd;
        dr[c] = rstd * ((gr[c] * gamma[c] - mg) - xhat * mgx);
    }
    if (lane == 0) {
        stats[3 * (size_t)r] = x0;
        stats[3 * (size_t)r + 1] = mean;
        stats[3 * (size_t)r + 2] = rstd;
    }
}

// 32 x 8 threads: threadIdx.x is the column in a 32-column strip, threadIdx.y a row group
// (rows ty, ty + 8, ...); the 8 partial sums of a column are added in shared memory, in order.
#define LNB_STRIP 32
#define LNB_GROUPS 8

// launch: grid=cdiv(cols, LNB_STRIP) block=(LNB_STRIP, LNB_GROUPS)
extern "C" __global__ void __launch_bounds__(LNB_STRIP * LNB_GROUPS)
layernorm_backward_warp_per_row__columns(const float* __restrict__ x, const float* __restrict__ dy,
                                         const float* __restrict__ stats, float* __restrict__ dgamma,
                                         float* __restrict__ dbeta, int rows, int cols)
{
    __shared__ float part_g[LNB_GROUPS][LNB_STRIP + 1], part_b[LNB_GROUPS][LNB_STRIP + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * LNB_STRIP + tx;
    float dg = 0.0f, db = 0.0f;
    if (c < cols) {
        for (int r = ty; r < rows; r += LNB_GROUPS) {
            const size_t i = (size_t)r * cols + c;
            const float* st = stats + 3 * (size_t)r;         // the same 3 words for the whole warp
            const float xhat = ((x[i] - st[0]) - st[1]) * st[2];
            dg += dy[i] * xhat;
            db += dy[i];
        }
    }
    part_g[ty][tx] = dg;
    part_b[ty][tx] = db;
    __syncthreads();
    if (ty == 0 && c < cols) {
        float tg = 0.0f, tb = 0.0f;
        for (int k = 0; k < LNB_GROUPS; ++k) { tg += part_g[k][tx]; tb += part_b[k][tx]; }
        dgamma[c] = tg;
        dbeta[c] = tb;
    }
}

// ------------------------------------------------------------------ 3. fused
// __rows: LNB_BLOCKS blocks at most (fewer when there are fewer rows); block b takes rows
// b, b + gridDim.x, ... Thread t owns columns t, t + nt, ... (LNB_REG of them) in every row, so
// its running dgamma / dbeta for those columns stay in its registers for the whole walk.
// A fixed block count (not one per SM) keeps the partial sums - and so the result bits -
// the same on every GPU; 256 blocks are two per SM of an H200.
#define LNB_BLOCKS 256
#define LNB_REG 8                  // columns per thread: d, dy, dgamma, dbeta = 32 registers

// launch: grid=min(rows, LNB_BLOCKS) block=min(1024, max(128, 32 * cdiv(cdiv(cols, LNB_REG), 32)))
// requires: cols <= 1024 * LNB_REG -- keeps a row in registers: at most 8192 columns (1024 threads x 8); warp_per_row takes longer rows
// scratch: partials float (min(rows, LNB_BLOCKS), 2, cols) -- each block's sums of dy * xhat and dy, per column
extern "C" __global__ void __launch_bounds__(1024)
layernorm_backward_fused__rows(const float* __restrict__ x, const float* __restrict__ gamma,
                               const float* __restrict__ dy, float* __restrict__ dx,
                               float* __restrict__ partials, int rows, int cols, float eps)
{
    __shared__ float red[66];
    const int tid = threadIdx.x, nt = blockDim.x;
    float dg[LNB_REG], db[LNB_REG];                  // this thread's columns' running sums
#pragma unroll
    for (int k = 0; k < LNB_REG; ++k) { dg[k] = 0.0f; db[k] = 0.0f; }
    if (cols <= nt * LNB_REG) {                      // the launch line guarantees it
        for (int r = blockIdx.x; r < rows; r += gridDim.x) {
            const float* xr = x + (size_t)r * cols;
            const float* gr = dy + (size_t)r * cols;
            float* dr = dx + (size_t)r * cols;
            const float x0 = xr[0];
            float d[LNB_REG], g[LNB_REG];            // the row, once: d = x - x0 and dy
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < LNB_REG; ++k) {
                const int c = tid + k * nt;
                d[k] = c < cols ? xr[c] - x0 : 0.0f;
                g[k] = c < cols ? gr[c] : 0.0f;
                sum += d[k];                         // padding is 0
            }
            float unused = 0.0f;
            block_sum2(sum, unused, red);
            const float mean = sum / cols;
            float sq = 0.0f;
#pragma unroll
            for (int k = 0; k < LNB_REG; ++k) {
                d[k] -= mean;                        // from here on d is x - mean (of the row)
                if (tid + k * nt < cols) sq += d[k] * d[k];
            }
            block_sum2(sq, unused, red);
            const float rstd = rsqrtf(sq / cols + eps);
            float sg = 0.0f, sgx = 0.0f;
#pragma unroll
            for (int k = 0; k < LNB_REG; ++k) {
                const int c = tid + k * nt;
                d[k] *= rstd;                        // xhat
                const float gg = c < cols ? g[k] * gamma[c] : 0.0f;
                sg += gg;
                sgx += gg * d[k];
                dg[k] += g[k] * d[k];                // the column sums, in registers
                db[k] += g[k];
            }
            block_sum2(sg, sgx, red);
            const float mg = sg / cols, mgx = sgx / cols;
#pragma unroll
            for (int k = 0; k < LNB_REG; ++k) {
                const int c = tid + k * nt;
                if (c < cols) dr[c] = rstd * ((g[k] * gamma[c] - mg) - d[k] * mgx);
            }
        }
    }
    float* pg = partials + (size_t)blockIdx.x * 2 * cols;        // this block's two rows of partials
#pragma unroll
    for (int k = 0; k < LNB_REG; ++k) {
        const int c = tid + k * nt;
        if (c < cols) { pg[c] = dg[k]; pg[cols + c] = db[k]; }
    }
}

// __columns: one thread per column adds the blocks' partials, block 0 first.
// launch: grid=cdiv(cols, 256) block=256
extern "C" __global__ void __launch_bounds__(256)
layernorm_backward_fused__columns(const float* __restrict__ partials, float* __restrict__ dgamma,
                                  float* __restrict__ dbeta, int rows, int cols)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int blocks = min(rows, LNB_BLOCKS);        // as many as the __rows launch had
    float tg = 0.0f, tb = 0.0f;
    for (int b = 0; b < blocks; ++b) {
        tg += partials[(size_t)b * 2 * cols + c];
        tb += partials[(size_t)b * 2 * cols + cols + c];
    }
    dgamma[c] = tg;
    dbeta[c] = tb;
}
