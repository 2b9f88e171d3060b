// transpose.cu - swap the two middle axes of a 4-D float32 tensor x (outer, p, q, inner):
//     y[n, q, p, i] = x[n, p, q, i]          y is (outer, q, p, inner)
// A GPT splits its heads with it, merges them back, and makes wte^T for its tied output
// head (wte seen as (1, vocab, channels, 1)). It is its own backward: dx = transpose(dy).
//
// Variants (naive first); each adds one idea:
//   naive   one thread per output element, in y's order: the flattened index is split
//           into (n, q, p, i) with divisions. With inner >= 32 a warp reads 32 neighbours
//           of one x row and writes 32 neighbours of one y row: coalesced both ways. With
//           inner = 1 the reads stride by q floats (a 2-D transpose: the case for a
//           shared-memory tile, which a GPT's only 2-D transpose, 65 x 64 floats, does
//           not need).
//   vec4    one thread per 4 floats of a row: float4 loads and stores, a quarter of the
//           instructions for the same bytes, when inner % 4 == 0 and both buffers are
//           16-byte aligned; otherwise the same thread moves its (up to) 4 floats one by one.
// Memory-bound, no arithmetic: GB/s is the figure of merit.
//
// Launch geometry is on the `// launch:` line beside each kernel (harness/backends/cuda/
// kernels.py reads it); parameters match the declaration (harness/primitives/transpose.py)
// by name: x, y and the dims outer, p, q, inner. Element counts are int (the harness refuses
// tensors of 2^31 elements or more).

#define THREADS 256

__device__ __forceinline__ bool aligned16(const void* p)
{
    return ((unsigned long long)p & 15) == 0;
}

// ------------------------------------------------------------------ 1. naive
// launch: grid=cdiv(outer * p * q * inner, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
transpose_naive(const float* __restrict__ x, float* __restrict__ y, int outer, int p, int q, int inner)
{
    const int o = blockIdx.x * blockDim.x + threadIdx.x;           // index into y
    if (o >= outer * p * q * inner) return;
    const int c = o % inner;
    const int row = o / inner;                                      // (n * q + j) * p + i
    const int i = row % p, j = (row / p) % q, n = row / (p * q);
    y[o] = x[((size_t)(n * p + i) * q + j) * inner + c];
}

// ------------------------------------------------------------------ 2. vec4
// Thread t of the flattened (row, quad) grid: y row t / quads, floats 4 * (t % quads) + 0..3.
// launch: grid=cdiv(outer * p * q * cdiv(inner, 4), THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
transpose_vec4(const float* __restrict__ x, float* __restrict__ y, int outer, int p, int q, int inner)
{
    const int quads = (inner + 3) / 4;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= outer * p * q * quads) return;
    const int row = t / quads, c = 4 * (t % quads);
    const int i = row % p, j = (row / p) % q, n = row / (p * q);
    const float* src = x + ((size_t)(n * p + i) * q + j) * inner + c;
    float* dst = y + (size_t)row * inner + c;
    if (inner % 4 == 0 && aligned16(x) && aligned16(y)) {
        *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
    } else {
        const int m = min(4, inner - c);                            // the row's last quad may be partial
        for (int k = 0; k < m; ++k) dst[k] = src[k];
    }
}
