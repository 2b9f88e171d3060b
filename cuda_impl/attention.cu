// attention.cu - causal scaled dot-product self-attention, float32, per (batch, head), from
// q, k, v of shape (batch, heads, time, head_dim), row-major:
//     S[i, j] = q[i] . k[j] / sqrt(head_dim)    for j <= i (key j is masked for j > i)
//     P[i, :] = softmax(S[i, :]),   out[i] = sum_j P[i, j] v[j],   lse[i] = log sum_j exp(S[i, j])
// and its backward (attention_backward: q, k, v, out, lse, dout -> dq, dk, dv), with
// D[i] = dout[i] . out[i] and P recomputed as exp(S - lse):
//     dv[j] = sum_i P[i, j] dout[i],   dS = P * (dout v^T - D)   (the softmax backward, per row)
//     dq[i] = sum_j dS[i, j] k[j] / sqrt(d),   dk[j] = sum_i dS[i, j] q[i] / sqrt(d)
//
// Forward variants (naive first):
//   naive   __scores, __softmax, __pv: three kernels and a T x T scratch matrix per (batch,
//           head), one thread per output element (per row for the softmax). S is written
//           to memory, read back and rewritten in place as P, then read again by P @ v: a
//           T x T matrix is T / head_dim times the size of q (16x at T = 1024, d = 64), it
//           crosses DRAM several times, and the whole batch's S must fit in device memory.
//   flash   ONE kernel, and the T x T matrix never exists (FlashAttention, Dao et al. 2022).
//           A block owns 16 query rows of one (batch, head), 4 per warp, and keeps them in
//           shared memory; K and V stream through shared memory 32 keys at a time. Each
//           query row keeps a running max m, running sum l and its output accumulator (in
//           registers, head_dim / 32 channels per lane) and applies the online softmax
//           (softmax.cu): when a tile raises the max, l and the accumulator are rescaled by
//           exp(m_old - m_new) before the tile's exp(S - m_new) are added. While scoring,
//           lane j of a warp owns key j of the tile and computes its whole dot product (no
//           shuffle per key: one warp max and one warp sum per row and tile); while
//           accumulating, lane c owns channels c, c + 32, ... of the output. The warp's 4 rows
//           share every k and v value it reads from shared memory. Causal:
//           key tiles entirely above the block's last row are never loaded (half the work
//           skipped), and the diagonal tile is masked element by element. lse = m + log(l)
//           is written for the backward. head_dim up to 128 (4 channels per lane).
//
// Backward variants:
//   naive   __probs, __rowdot, __dscores, __dq, __dk, __dv: P recomputed from the saved lse
//           into a T x T scratch, D per row, dS into a second T x T scratch, then each
//           product as its own kernel, one thread per output element (a plain loop over the
//           other operand's rows). Two T x T matrices of scratch; no atomics.
//   flash   __rowdot, __dkdv, __dq: no T x T buffer. __rowdot: D[i], one warp per row.
//           __dkdv: a block owns 8 keys of one (batch, head) (2 per warp, with their k and v
//           in shared memory) and streams the queries that can see them (i >= its first key)
//           32 at a time through shared memory, recomputing p = exp(q.k / sqrt(d) - lse[i])
//           and dS, and accumulating dv += p dout[i], dk += dS q[i] in registers.
//           __dq: a block owns 8 query rows and streams the keys j <= i, accumulating
//           dq += dS k[j]. The scores are recomputed twice (once per kernel): the price of
//           writing every gradient from the one block that owns it, with no atomics - so
//           the same bits on every run (FlashAttention-2 uses atomics for dq instead).
//
// Every sum runs in a fixed order: a forward or backward gives the same bits on every run.
// Masked scores are -inf, whose exp is exactly 0: a row's masked keys add nothing, and
// rows past `time` in a tile are filled with zeros so that 0 * (unwritten shared memory)
// never turns into NaN.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/attention.py) by name: tensors q, k, v, out, lse (and dout, dq, dk,
// dv for the backward), the dims batch, heads, time, head_dim, and the scratch buffers S, P,
// dS, D (`// scratch:` lines). Sizes are int: the harness refuses any tensor or scratch
// buffer of 2^31 elements or more (the naive variants' T x T matrices reach that first).

#define NEG_INF (__int_as_float(0xff800000))   // -infinity: the identity of max(), exp(-inf) = 0
#define FULL_MASK 0xffffffffu
#define THREADS 256                            // the naive kernels, one thread per output
#define MAX_HEAD_DIM 128                       // the flash kernels: head_dim / 32 channels per lane
#define SLOTS (MAX_HEAD_DIM / 32)              // a lane's channels: c = lane + 32 * slot
// The flash kernels' __launch_bounds__ also ask for 8 resident blocks (of 128 threads) per SM:
// ptxas then budgets 64 registers a thread, and all of them fit without spilling. Without
// the hint, NVRTC 13.5 gave __dkdv 56 registers on sm_90 and spilled 4 bytes.
#define FLASH_MIN_BLOCKS 8

__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// 1 / sqrt(d) from the IEEE (correctly rounded) sqrt and division; rsqrtf is 2 ulp off.
__device__ __forceinline__ float score_scale(int head_dim)
{
    return 1.0f / sqrtf((float)head_dim);
}

// ================================================================== forward 1. naive
// Step 1: S[bh, i, j] = q[i] . k[j] * scale below the diagonal, -inf above it.
// launch: grid=cdiv(batch * heads * time * time, THREADS) block=THREADS
// scratch: S float (batch, heads, time, time) -- the scaled masked scores, then (after __softmax) P
extern "C" __global__ void __launch_bounds__(THREADS)
attention_naive__scores(const float* __restrict__ q, const float* __restrict__ k, float* __restrict__ S,
                        int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;        // (bh, i, j) flattened
    if (e >= batch * heads * time * time) return;
    const int j = e % time, i = (e / time) % time, bh = e / (time * time);
    if (j > i) { S[e] = NEG_INF; return; }
    const float* qi = q + ((size_t)bh * time + i) * head_dim;
    const float* kj = k + ((size_t)bh * time + j) * head_dim;
    float dot = 0.0f;
    for (int c = 0; c < head_dim; ++c) dot += qi[c] * kj[c];
    S[e] = dot * score_scale(head_dim);
}

// Step 2: one thread per row: the max, the sum of exp(S - max), then the row of S becomes P
// in place; lse = max + log(sum). Only j <= i is touched: __pv reads no further.
// launch: grid=cdiv(batch * heads * time, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
attention_naive__softmax(float* __restrict__ S, float* __restrict__ lse, int batch, int heads, int time)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;        // r = bh * time + i
    if (r >= batch * heads * time) return;
    const int i = r % time;
    float* row = S + (size_t)r * time;
    float m = row[0];                                            // key 0 is visible to every row
    for (int j = 1; j <= i; ++j) m = fmaxf(m, row[j]);
    float l = 0.0f;
    for (int j = 0; j <= i; ++j) l += expf(row[j] - m);
    const float inv = 1.0f / l;                                  // l >= 1: the max contributes exp(0)
    for (int j = 0; j <= i; ++j) row[j] = expf(row[j] - m) * inv;
    lse[r] = m + logf(l);
}

// Step 3: out[bh, i, c] = sum_{j <= i} P[i, j] v[j, c]; threadIdx.x runs along c, so a warp
// reads 32 neighbouring floats of a row of v (and one broadcast P[i, j]).
// launch: grid=cdiv(batch * heads * time * head_dim, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
attention_naive__pv(const float* __restrict__ v, const float* __restrict__ S, float* __restrict__ out,
                    int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;        // (bh, i, c) flattened
    if (e >= batch * heads * time * head_dim) return;
    const int c = e % head_dim, r = e / head_dim;               // r = bh * time + i
    const int i = r % time, bh = r / time;
    const float* p = S + (size_t)r * time;
    const float* vh = v + (size_t)bh * time * head_dim + c;
    float acc = 0.0f;
    for (int j = 0; j <= i; ++j) acc += p[j] * vh[(size_t)j * head_dim];
    out[e] = acc;
}

// ================================================================== forward 2. flash
#define FA_WARPS 4
#define FA_ROWS 4                              // query rows per warp
#define FA_QTILE (FA_WARPS * FA_ROWS)          // 16 query rows per block
#define FA_KTILE 32                            // keys per tile: one per lane while scoring

// Dynamic shared memory, in floats: the block's q rows [FA_QTILE][d], the K tile
// [FA_KTILE][d + 1] (the +1: lane j reads row j, and a stride of d + 1 puts the 32 lanes'
// words in 32 different banks) and the V tile [FA_KTILE][d] (read along a row: no conflict).
// At d = 128: 40 KiB, under the 48 KiB a kernel gets without opting in.
// launch: grid=(cdiv(time, FA_QTILE), batch * heads) block=FA_WARPS * 32 smem=(FA_QTILE * head_dim + FA_KTILE * (head_dim + 1) + FA_KTILE * head_dim) * 4
// requires: head_dim <= MAX_HEAD_DIM -- each lane keeps head_dim / 32 output channels of 4 rows in registers: at most 128 (naive takes any head_dim)
extern "C" __global__ void __launch_bounds__(FA_WARPS * 32, FLASH_MIN_BLOCKS)
attention_flash(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                float* __restrict__ out, float* __restrict__ lse, int batch, int heads, int time, int head_dim)
{
    extern __shared__ float smem[];
    __shared__ float Ps[FA_WARPS][FA_ROWS][FA_KTILE];          // each warp's p of its rows, one tile
    const int d = head_dim, kstride = d + 1;
    float* Qs = smem;
    float* Ks = Qs + FA_QTILE * d;
    float* Vs = Ks + FA_KTILE * kstride;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nthreads = blockDim.x;
    const size_t head = (size_t)blockIdx.y * time * d;          // this (batch, head)'s first row
    const float* qh = q + head;
    const float* kh = k + head;
    const float* vh = v + head;
    const int q0 = blockIdx.x * FA_QTILE;
    const int q_last = min(q0 + FA_QTILE, time) - 1;            // the block's last real row
    const int i0 = q0 + warp * FA_ROWS;                         // this warp's first row
    const float* Qw = Qs + warp * FA_ROWS * d;                  // ... and its q rows
    const float scale = score_scale(d);

    for (int e = tid; e < FA_QTILE * d; e += nthreads) {        // rows past `time`: zeros
        const int i = q0 + e / d;
        Qs[e] = i < time ? qh[(size_t)i * d + e % d] : 0.0f;
    }

    // Per query row: running max, running sum, and this lane's output channels. Constant
    // indices only (fully unrolled loops over rows and slots): the arrays stay in registers.
    float m[FA_ROWS], l[FA_ROWS], acc[FA_ROWS][SLOTS];
#pragma unroll
    for (int r = 0; r < FA_ROWS; ++r) {
        m[r] = NEG_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int s = 0; s < SLOTS; ++s) acc[r][s] = 0.0f;
    }

    // Causal: a key tile starting after the block's last row is invisible to all its rows.
    for (int k0 = 0; k0 <= q_last; k0 += FA_KTILE) {
        __syncthreads();                                        // everyone is done with the last tile
        for (int e = tid; e < FA_KTILE * d; e += nthreads) {
            const int r = e / d, c = e % d, j = k0 + r;
            const bool real = j < time;
            Ks[r * kstride + c] = real ? kh[(size_t)j * d + c] : 0.0f;
            Vs[e] = real ? vh[(size_t)j * d + c] : 0.0f;
        }
        __syncthreads();                                        // the tile (and, first time, Qs) is in

        // Scoring: lane j takes key k0 + j against the warp's 4 rows. Each k value read from
        // shared memory serves 4 FMAs (the q values are broadcasts: one word for all lanes).
        const int j = k0 + lane;
        const float* kr = Ks + lane * kstride;
        float dot[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; ++r) dot[r] = 0.0f;
        for (int c = 0; c < d; ++c) {
            const float kc = kr[c];
#pragma unroll
            for (int r = 0; r < FA_ROWS; ++r) dot[r] += Qw[r * d + c] * kc;
        }

        // The online softmax step, row by row: the tile's max, the rescale factor for what
        // came before, the tile's own terms. Masked keys (the future, or past the end) score
        // -inf and get p = 0; the `==` test keeps exp(-inf - -inf) = NaN away from a row
        // that has seen nothing yet.
        float alpha[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; ++r) {
            const float s = (j <= i0 + r && j < time) ? dot[r] * scale : NEG_INF;
            const float m_new = fmaxf(m[r], warp_max(s));
            const float p = s == NEG_INF ? 0.0f : expf(s - m_new);
            alpha[r] = m[r] == m_new ? 1.0f : expf(m[r] - m_new);
            l[r] = l[r] * alpha[r] + warp_sum(p);
            m[r] = m_new;
            Ps[warp][r][lane] = p;
        }
        __syncwarp();                                           // every lane's p is in Ps

        // Accumulating: the lanes swap roles, from keys to channels (c = lane + 32 * slot),
        // and each v value read from shared memory again serves the warp's 4 rows.
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c >= d) continue;
            float a[FA_ROWS];
#pragma unroll
            for (int r = 0; r < FA_ROWS; ++r) a[r] = 0.0f;
            for (int jj = 0; jj < FA_KTILE; ++jj) {
                const float vc = Vs[jj * d + c];
#pragma unroll
                for (int r = 0; r < FA_ROWS; ++r) a[r] += Ps[warp][r][jj] * vc;
            }
#pragma unroll
            for (int r = 0; r < FA_ROWS; ++r) acc[r][sl] = acc[r][sl] * alpha[r] + a[r];
        }
        __syncwarp();                                           // all lanes have read Ps before the next tile
    }

#pragma unroll
    for (int r = 0; r < FA_ROWS; ++r) {
        const int i = i0 + r;
        if (i >= time) continue;
        float* o = out + head + (size_t)i * d;
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c < d) o[c] = acc[r][sl] / l[r];
        }
        if (lane == 0) lse[(size_t)blockIdx.y * time + i] = m[r] + logf(l[r]);
    }
}

// ================================================================== backward 1. naive
// Step 1: P[bh, i, j] = exp(S[i, j] - lse[i]) for j <= i, 0 above the diagonal.
// launch: grid=cdiv(batch * heads * time * time, THREADS) block=THREADS
// scratch: P float (batch, heads, time, time) -- the probabilities, recomputed from q, k and lse
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__probs(const float* __restrict__ q, const float* __restrict__ k,
                                const float* __restrict__ lse, float* __restrict__ P,
                                int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * heads * time * time) return;
    const int j = e % time, r = e / time;                       // r = bh * time + i
    const int i = r % time, bh = r / time;
    if (j > i) { P[e] = 0.0f; return; }
    const float* qi = q + (size_t)r * head_dim;
    const float* kj = k + ((size_t)bh * time + j) * head_dim;
    float dot = 0.0f;
    for (int c = 0; c < head_dim; ++c) dot += qi[c] * kj[c];
    P[e] = expf(dot * score_scale(head_dim) - lse[r]);
}

// Step 2: D[i] = dout[i] . out[i], one thread per row.
// launch: grid=cdiv(batch * heads * time, THREADS) block=THREADS
// scratch: D float (batch, heads, time) -- each row's dout . out, the softmax backward's row term
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__rowdot(const float* __restrict__ out, const float* __restrict__ dout,
                                 float* __restrict__ D, int batch, int heads, int time, int head_dim)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= batch * heads * time) return;
    const float* o = out + (size_t)r * head_dim;
    const float* g = dout + (size_t)r * head_dim;
    float s = 0.0f;
    for (int c = 0; c < head_dim; ++c) s += g[c] * o[c];
    D[r] = s;
}

// Step 3: dS[i, j] = P[i, j] * (dout[i] . v[j] - D[i]), 0 above the diagonal.
// launch: grid=cdiv(batch * heads * time * time, THREADS) block=THREADS
// scratch: dS float (batch, heads, time, time) -- the gradient of the scores
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__dscores(const float* __restrict__ v, const float* __restrict__ dout,
                                  const float* __restrict__ P, const float* __restrict__ D, float* __restrict__ dS,
                                  int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * heads * time * time) return;
    const int j = e % time, r = e / time;
    const int i = r % time, bh = r / time;
    if (j > i) { dS[e] = 0.0f; return; }
    const float* g = dout + (size_t)r * head_dim;
    const float* vj = v + ((size_t)bh * time + j) * head_dim;
    float dp = 0.0f;
    for (int c = 0; c < head_dim; ++c) dp += g[c] * vj[c];
    dS[e] = P[e] * (dp - D[r]);
}

// Step 4: dq[i, c] = scale * sum_{j <= i} dS[i, j] k[j, c] (threadIdx.x along c).
// launch: grid=cdiv(batch * heads * time * head_dim, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__dq(const float* __restrict__ k, const float* __restrict__ dS, float* __restrict__ dq,
                             int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * heads * time * head_dim) return;
    const int c = e % head_dim, r = e / head_dim;
    const int i = r % time, bh = r / time;
    const float* ds = dS + (size_t)r * time;
    const float* kh = k + (size_t)bh * time * head_dim + c;
    float acc = 0.0f;
    for (int j = 0; j <= i; ++j) acc += ds[j] * kh[(size_t)j * head_dim];
    dq[e] = acc * score_scale(head_dim);
}

// Step 5: dk[j, c] = scale * sum_{i >= j} dS[i, j] q[i, c]: dS read down a column.
// launch: grid=cdiv(batch * heads * time * head_dim, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__dk(const float* __restrict__ q, const float* __restrict__ dS, float* __restrict__ dk,
                             int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * heads * time * head_dim) return;
    const int c = e % head_dim, r = e / head_dim;               // r = bh * time + j
    const int j = r % time, bh = r / time;
    const float* ds = dS + (size_t)bh * time * time + j;        // column j of this head's dS
    const float* qh = q + (size_t)bh * time * head_dim + c;
    float acc = 0.0f;
    for (int i = j; i < time; ++i) acc += ds[(size_t)i * time] * qh[(size_t)i * head_dim];
    dk[e] = acc * score_scale(head_dim);
}

// Step 6: dv[j, c] = sum_{i >= j} P[i, j] dout[i, c]: P read down a column.
// launch: grid=cdiv(batch * heads * time * head_dim, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
attention_backward_naive__dv(const float* __restrict__ dout, const float* __restrict__ P, float* __restrict__ dv,
                             int batch, int heads, int time, int head_dim)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * heads * time * head_dim) return;
    const int c = e % head_dim, r = e / head_dim;
    const int j = r % time, bh = r / time;
    const float* p = P + (size_t)bh * time * time + j;
    const float* gh = dout + (size_t)bh * time * head_dim + c;
    float acc = 0.0f;
    for (int i = j; i < time; ++i) acc += p[(size_t)i * time] * gh[(size_t)i * head_dim];
    dv[e] = acc;
}

// ================================================================== backward 2. flash
#define FB_WARPS 4
#define FB_ROWS 2                              // owned rows (keys in __dkdv, queries in __dq) per warp
#define FB_TILE (FB_WARPS * FB_ROWS)           // 8 owned rows per block
#define FB_STREAM 32                           // streamed rows per tile: one per lane while scoring

// Step 1: D[i] = dout[i] . out[i], one warp per row (coalesced, a shuffle sum).
// launch: grid=cdiv(batch * heads * time, 8) block=256
// scratch: D float (batch, heads, time) -- each row's dout . out, the softmax backward's row term
extern "C" __global__ void __launch_bounds__(256)
attention_backward_flash__rowdot(const float* __restrict__ out, const float* __restrict__ dout,
                                 float* __restrict__ D, int batch, int heads, int time, int head_dim)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= batch * heads * time) return;                      // the whole warp leaves together
    const float* o = out + (size_t)r * head_dim;
    const float* g = dout + (size_t)r * head_dim;
    float s = 0.0f;
    for (int c = lane; c < head_dim; c += 32) s += g[c] * o[c];
    s = warp_sum(s);
    if (lane == 0) D[r] = s;
}

// Step 2: dk and dv of a block's FB_TILE keys. Dynamic shared memory, in floats: the query
// tile Qs [FB_STREAM][d + 1] and dout tile dOs [FB_STREAM][d + 1] (lane i reads row i while
// scoring: the +1 spreads the lanes over the banks), the block's own Ks, Vs [FB_TILE][d],
// and the tile's lse and D [FB_STREAM] each. At d = 128: 40.5 KiB.
// launch: grid=(cdiv(time, FB_TILE), batch * heads) block=FB_WARPS * 32 smem=(2 * FB_STREAM * (head_dim + 1) + 2 * FB_TILE * head_dim + 2 * FB_STREAM) * 4
// requires: head_dim <= MAX_HEAD_DIM -- each lane keeps head_dim / 32 channels of dk and dv for 2 keys in registers: at most 128 (naive takes any head_dim)
extern "C" __global__ void __launch_bounds__(FB_WARPS * 32, FLASH_MIN_BLOCKS)
attention_backward_flash__dkdv(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               const float* __restrict__ lse, const float* __restrict__ dout,
                               const float* __restrict__ D, float* __restrict__ dk, float* __restrict__ dv,
                               int batch, int heads, int time, int head_dim)
{
    extern __shared__ float smem[];
    __shared__ float Ps[FB_WARPS][FB_ROWS][FB_STREAM], dSs[FB_WARPS][FB_ROWS][FB_STREAM];
    const int d = head_dim, qstride = d + 1;
    float* Qs = smem;
    float* dOs = Qs + FB_STREAM * qstride;
    float* Ks = dOs + FB_STREAM * qstride;
    float* Vs = Ks + FB_TILE * d;
    float* lse_s = Vs + FB_TILE * d;
    float* D_s = lse_s + FB_STREAM;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nthreads = blockDim.x;
    const size_t bh = blockIdx.y, head = bh * time * d;
    const int k0 = blockIdx.x * FB_TILE;                         // the block's first key
    const int j0 = k0 + warp * FB_ROWS;                          // this warp's first key
    const float* Kw = Ks + warp * FB_ROWS * d;                   // ... its k and v rows
    const float* Vw = Vs + warp * FB_ROWS * d;
    const float scale = score_scale(d);

    for (int e = tid; e < FB_TILE * d; e += nthreads) {
        const int j = k0 + e / d;
        Ks[e] = j < time ? k[head + (size_t)j * d + e % d] : 0.0f;
        Vs[e] = j < time ? v[head + (size_t)j * d + e % d] : 0.0f;
    }
    float dk_acc[FB_ROWS][SLOTS], dv_acc[FB_ROWS][SLOTS];
#pragma unroll
    for (int r = 0; r < FB_ROWS; ++r)
#pragma unroll
        for (int s = 0; s < SLOTS; ++s) dk_acc[r][s] = dv_acc[r][s] = 0.0f;

    // Causal: queries before the block's first key see none of its keys.
    for (int t0 = k0; t0 < time; t0 += FB_STREAM) {
        __syncthreads();                                         // everyone is done with the last tile
        for (int e = tid; e < FB_STREAM * d; e += nthreads) {
            const int r = e / d, c = e % d, i = t0 + r;
            const bool real = i < time;
            Qs[r * qstride + c] = real ? q[head + (size_t)i * d + c] : 0.0f;
            dOs[r * qstride + c] = real ? dout[head + (size_t)i * d + c] : 0.0f;
        }
        for (int r = tid; r < FB_STREAM; r += nthreads) {
            const bool real = t0 + r < time;
            lse_s[r] = real ? lse[bh * time + t0 + r] : 0.0f;
            D_s[r] = real ? D[bh * time + t0 + r] : 0.0f;
        }
        __syncthreads();

        // Scoring: lane i takes query t0 + i against the warp's keys: S = q.k and dP = dout.v,
        // each q and dout value read from shared memory serving both keys.
        const int i = t0 + lane;
        const float* qi = Qs + lane * qstride;
        const float* gi = dOs + lane * qstride;
        float dot[FB_ROWS], dp[FB_ROWS];
#pragma unroll
        for (int r = 0; r < FB_ROWS; ++r) dot[r] = dp[r] = 0.0f;
        for (int c = 0; c < d; ++c) {
            const float qc = qi[c], gc = gi[c];
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) { dot[r] += qc * Kw[r * d + c]; dp[r] += gc * Vw[r * d + c]; }
        }
        // P recomputed from the saved lse (no max, no sum: lse already holds both), and the
        // softmax backward dS = P (dP - D). Masked pairs contribute exactly 0.
#pragma unroll
        for (int r = 0; r < FB_ROWS; ++r) {
            const bool seen = i >= j0 + r && i < time && j0 + r < time;
            const float p = seen ? expf(dot[r] * scale - lse_s[lane]) : 0.0f;
            Ps[warp][r][lane] = p;
            dSs[warp][r][lane] = p * (dp[r] - D_s[lane]);
        }
        __syncwarp();

        // Accumulating: lane c sums over the tile's queries, in order: dv += P dout, dk += dS q.
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c >= d) continue;
            float a[FB_ROWS], b[FB_ROWS];
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) a[r] = b[r] = 0.0f;
            for (int ii = 0; ii < FB_STREAM; ++ii) {
                const float gc = dOs[ii * qstride + c], qc = Qs[ii * qstride + c];
#pragma unroll
                for (int r = 0; r < FB_ROWS; ++r) { a[r] += Ps[warp][r][ii] * gc; b[r] += dSs[warp][r][ii] * qc; }
            }
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) { dv_acc[r][sl] += a[r]; dk_acc[r][sl] += b[r]; }
        }
        __syncwarp();                                            // Ps, dSs read before the next tile
    }

#pragma unroll
    for (int r = 0; r < FB_ROWS; ++r) {
        const int j = j0 + r;
        if (j >= time) continue;
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c < d) {
                dk[head + (size_t)j * d + c] = dk_acc[r][sl] * scale;
                dv[head + (size_t)j * d + c] = dv_acc[r][sl];
            }
        }
    }
}

// Step 3: dq of a block's FB_TILE query rows. Dynamic shared memory, in floats: the key
// tile Ks and value tile Vs [FB_STREAM][d + 1] (lane j reads row j while scoring), the
// block's own Qs, dOs [FB_TILE][d]. At d = 128: 40.3 KiB.
// launch: grid=(cdiv(time, FB_TILE), batch * heads) block=FB_WARPS * 32 smem=(2 * FB_STREAM * (head_dim + 1) + 2 * FB_TILE * head_dim) * 4
// requires: head_dim <= MAX_HEAD_DIM -- each lane keeps head_dim / 32 channels of dq for 2 rows in registers: at most 128 (naive takes any head_dim)
extern "C" __global__ void __launch_bounds__(FB_WARPS * 32, FLASH_MIN_BLOCKS)
attention_backward_flash__dq(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                             const float* __restrict__ lse, const float* __restrict__ dout,
                             const float* __restrict__ D, float* __restrict__ dq,
                             int batch, int heads, int time, int head_dim)
{
    extern __shared__ float smem[];
    __shared__ float dSs[FB_WARPS][FB_ROWS][FB_STREAM];
    const int d = head_dim, kstride = d + 1;
    float* Ks = smem;
    float* Vs = Ks + FB_STREAM * kstride;
    float* Qs = Vs + FB_STREAM * kstride;
    float* dOs = Qs + FB_TILE * d;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nthreads = blockDim.x;
    const size_t bh = blockIdx.y, head = bh * time * d;
    const int q0 = blockIdx.x * FB_TILE;
    const int q_last = min(q0 + FB_TILE, time) - 1;
    const int i0 = q0 + warp * FB_ROWS;                          // this warp's first row
    const float* Qw = Qs + warp * FB_ROWS * d;                   // ... its q and dout rows
    const float* dOw = dOs + warp * FB_ROWS * d;
    const float scale = score_scale(d);

    for (int e = tid; e < FB_TILE * d; e += nthreads) {
        const int i = q0 + e / d;
        Qs[e] = i < time ? q[head + (size_t)i * d + e % d] : 0.0f;
        dOs[e] = i < time ? dout[head + (size_t)i * d + e % d] : 0.0f;
    }
    // Each owned row's lse and D: the same for every lane, kept in registers.
    float row_lse[FB_ROWS], row_D[FB_ROWS], dq_acc[FB_ROWS][SLOTS];
#pragma unroll
    for (int r = 0; r < FB_ROWS; ++r) {
        const int i = i0 + r;
        row_lse[r] = i < time ? lse[bh * time + i] : 0.0f;
        row_D[r] = i < time ? D[bh * time + i] : 0.0f;
#pragma unroll
        for (int s = 0; s < SLOTS; ++s) dq_acc[r][s] = 0.0f;
    }

    // Causal: keys after the block's last row are seen by none of its rows.
    for (int k0 = 0; k0 <= q_last; k0 += FB_STREAM) {
        __syncthreads();
        for (int e = tid; e < FB_STREAM * d; e += nthreads) {
            const int r = e / d, c = e % d, j = k0 + r;
            const bool real = j < time;
            Ks[r * kstride + c] = real ? k[head + (size_t)j * d + c] : 0.0f;
            Vs[r * kstride + c] = real ? v[head + (size_t)j * d + c] : 0.0f;
        }
        __syncthreads();

        // Scoring: lane j takes key k0 + j against the warp's rows (S = q.k, dP = dout.v).
        const int j = k0 + lane;
        const float* kj = Ks + lane * kstride;
        const float* vj = Vs + lane * kstride;
        float dot[FB_ROWS], dp[FB_ROWS];
#pragma unroll
        for (int r = 0; r < FB_ROWS; ++r) dot[r] = dp[r] = 0.0f;
        for (int c = 0; c < d; ++c) {
            const float kc = kj[c], vc = vj[c];
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) { dot[r] += Qw[r * d + c] * kc; dp[r] += dOw[r * d + c] * vc; }
        }
#pragma unroll
        for (int r = 0; r < FB_ROWS; ++r) {
            const bool seen = j <= i0 + r && i0 + r < time;       // j <= i < time: a real key
            const float p = seen ? expf(dot[r] * scale - row_lse[r]) : 0.0f;
            dSs[warp][r][lane] = p * (dp[r] - row_D[r]);
        }
        __syncwarp();

        // Accumulating: lane c sums over the tile's keys, in order: dq += dS k.
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c >= d) continue;
            float a[FB_ROWS];
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) a[r] = 0.0f;
            for (int jj = 0; jj < FB_STREAM; ++jj) {
                const float kc = Ks[jj * kstride + c];
#pragma unroll
                for (int r = 0; r < FB_ROWS; ++r) a[r] += dSs[warp][r][jj] * kc;
            }
#pragma unroll
            for (int r = 0; r < FB_ROWS; ++r) dq_acc[r][sl] += a[r];
        }
        __syncwarp();                                            // dSs read before the next tile
    }

#pragma unroll
    for (int r = 0; r < FB_ROWS; ++r) {
        const int i = i0 + r;
        if (i >= time) continue;
#pragma unroll
        for (int sl = 0; sl < SLOTS; ++sl) {
            const int c = lane + 32 * sl;
            if (c < d) dq[head + (size_t)i * d + c] = dq_acc[r][sl] * scale;
        }
    }
}
