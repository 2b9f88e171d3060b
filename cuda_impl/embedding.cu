// embedding.cu - GPT-2's token and position embeddings, float32 tables and int64 token ids:
//     out[b, t, c] = wte[idx[b, t], c] + wpe[t, c]
// and its backward, a scatter-add of the upstream gradient dout into both tables:
//     dwte[v, c] = sum over (b, t) with idx[b, t] == v of dout[b, t, c]
//     dwpe[t, c] = sum over b of dout[b, t, c]
//
// Forward variants (naive first); each adds one idea:
//   naive   one thread per output element: the flattened index is split into (position,
//           channel) with a division, and the token id is re-read by every channel of its
//           row (the warp's 32 reads of idx are one broadcast, so that is cheap).
//   vec4    one thread per 4 channels of a position: float4 loads of both table rows and a
//           float4 store, a quarter of the instructions for the same bytes. Rows start
//           16-byte aligned only when channels % 4 == 0 (and the buffers are aligned);
//           otherwise, and for nothing else, the same thread does its 4 (or fewer, at the
//           row's end) channels one by one.
// The gather is memory-bound (12 bytes moved per FLOP): GB/s is the figure of merit. A
// character vocabulary is a few KiB of wte, so its rows come from L1/L2, not DRAM.
//
// Backward variants (embedding_backward: dout, idx, wte -> dwte, dwpe; wte is there only
// for its shape, the vocabulary size, and no kernel reads it):
//   naive   the CPU loop on a GPU: one thread per channel zeroes its own column of both
//           tables, then walks every position in order, adding dout[pos, c] into dwte[idx,
//           c] and dwpe[t, c]. No other thread touches column c, so no atomics and the same
//           bits every run; coalesced (a warp reads 32 neighbouring channels of a row), but
//           only `channels` threads (768: 3 blocks on a 132-SM GPU), each a loop of
//           batch x time steps.
//   atomic  __zero, __scatter: two kernels. Outputs arrive holding anything (the harness
//           poisons them with NaN), and a scatter-add can only add, so __zero first writes
//           0 to both tables; then __scatter runs one thread per (position, channel) that
//           atomicAdds its dout element into dwte[idx, c] and dwpe[t, c]. Fast and simple,
//           but many positions hold the same token (a character model reads 'e'
//           everywhere), and the hardware finishes their atomics in whatever order it gets
//           to them: float addition is not associative, so the LAST BITS of dwte (and dwpe)
//           change from run to run. Within tolerance every time; never bit-reproducible.
//   owner   __tokens, __positions: deterministic, no atomics. In __tokens each thread OWNS
//           one (vocab row, channel) of dwte and walks every position in order (b, t),
//           adding the dout rows whose token is its own; a block shares one vocab row, so
//           the token ids are staged through shared memory once per block and compared
//           there. __positions: one thread per (t, c) of dwpe sums over b in order. The
//           same bits on every run and every GPU. The cost: every vocab row scans every
//           position, O(vocab x batch x time) compares (dout itself is still read once,
//           by the one owner of each position's token). For a character vocabulary
//           (65-100 rows) that is 65-100 compares per dout element, on token ids already in
//           shared memory: a constant factor, paid for reproducible bits. For GPT-2's 50257
//           tokens it would be 50257 per element, hopeless, and the deterministic
//           method there is to sort the positions by token (a radix sort of idx) and let
//           each token's owner sum its own contiguous run of positions.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/embedding.py) by name: tensors idx (`const long long*`: int64), wte,
// wpe, out (dout, idx, wte, dwte, dwpe for the backward) and the dims batch, time,
// channels, vocab. Sizes are int (the harness refuses any tensor of 2^31 elements or
// more); row offsets are size_t. Token ids are checked to lie in [0, vocab) before any
// kernel sees them.

#define THREADS 256                 // threads per block, every variant but owner__tokens
#define OWN_THREADS 128             // owner__tokens: channels of one vocab row per block
#define OWN_CHUNK 256               // owner__tokens: token ids staged in shared memory at a time

__device__ __forceinline__ bool aligned16(const void* p)
{
    return ((unsigned long long)p & 15) == 0;
}

// ------------------------------------------------------------------ forward 1. naive
// launch: grid=cdiv(batch * time * channels, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_naive(const long long* __restrict__ idx, const float* __restrict__ wte, const float* __restrict__ wpe,
                float* __restrict__ out, int batch, int time, int channels)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;        // batch * time * channels < 2^31
    if (i >= batch * time * channels) return;
    const int pos = i / channels, c = i % channels;              // pos = b * time + t
    const int t = pos % time;
    out[i] = wte[(size_t)idx[pos] * channels + c] + wpe[(size_t)t * channels + c];
}

// ------------------------------------------------------------------ forward 2. vec4
// Thread q of the flattened (position, quad) grid: position q / quads, channels 4 * (q % quads) + 0..3.
// launch: grid=cdiv(batch * time * cdiv(channels, 4), THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_vec4(const long long* __restrict__ idx, const float* __restrict__ wte, const float* __restrict__ wpe,
               float* __restrict__ out, int batch, int time, int channels)
{
    const int quads = (channels + 3) / 4;
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= batch * time * quads) return;
    const int pos = q / quads, c = 4 * (q % quads);
    const int t = pos % time;
    const float* te = wte + (size_t)idx[pos] * channels + c;
    const float* pe = wpe + (size_t)t * channels + c;
    float* o = out + (size_t)pos * channels + c;
    const bool vec = (channels % 4 == 0) && aligned16(wte) && aligned16(wpe) && aligned16(out);
    if (vec) {
        const float4 a = *reinterpret_cast<const float4*>(te);
        const float4 b = *reinterpret_cast<const float4*>(pe);
        *reinterpret_cast<float4*>(o) = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    } else {
        const int n = min(4, channels - c);                      // the row's last quad may be partial
        for (int j = 0; j < n; ++j) o[j] = te[j] + pe[j];
    }
}

// ------------------------------------------------------------------ backward 1. naive
// launch: grid=cdiv(channels, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_backward_naive(const float* __restrict__ dout, const long long* __restrict__ idx,
                         const float* __restrict__ wte, float* __restrict__ dwte, float* __restrict__ dwpe,
                         int batch, int time, int channels, int vocab)
{
    (void)wte;                                                   // only its shape matters (vocab)
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    for (int v = 0; v < vocab; ++v) dwte[(size_t)v * channels + c] = 0.0f;   // outputs arrive poisoned
    for (int t = 0; t < time; ++t) dwpe[(size_t)t * channels + c] = 0.0f;
    for (int pos = 0; pos < batch * time; ++pos) {
        const float g = dout[(size_t)pos * channels + c];
        dwte[(size_t)idx[pos] * channels + c] += g;
        dwpe[(size_t)(pos % time) * channels + c] += g;
    }
}

// ------------------------------------------------------------------ backward 2. atomic
// Step 1: both tables to 0 (one grid over the larger of the two).
// launch: grid=cdiv(max(vocab, time) * channels, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_backward_atomic__zero(const float* __restrict__ wte, float* __restrict__ dwte, float* __restrict__ dwpe,
                                int time, int channels, int vocab)
{
    (void)wte;                                                   // only its shape matters (vocab)
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < vocab * channels) dwte[i] = 0.0f;
    if (i < time * channels) dwpe[i] = 0.0f;
}

// Step 2: every (position, channel) adds its gradient into its token's row and its
// position's row. Neighbouring threads hit neighbouring channels of one row: the atomics of
// a warp are to 32 different addresses, and collide only with other positions of the
// same token (or, in dwpe, the same t of other batches).
// launch: grid=cdiv(batch * time * channels, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_backward_atomic__scatter(const float* __restrict__ dout, const long long* __restrict__ idx,
                                   float* __restrict__ dwte, float* __restrict__ dwpe,
                                   int batch, int time, int channels)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * time * channels) return;
    const int pos = i / channels, c = i % channels;
    const int t = pos % time;
    const float g = dout[i];
    atomicAdd(&dwte[(size_t)idx[pos] * channels + c], g);
    atomicAdd(&dwpe[(size_t)t * channels + c], g);
}

// ------------------------------------------------------------------ backward 3. owner
// Step 1: block (channel strip, v) owns row v of dwte. The block walks the positions in
// chunks: its threads copy OWN_CHUNK token ids into shared memory together (coalesced, once
// per block instead of once per thread), then each thread compares them in order and adds
// dout[pos, c] where the token is v. Every thread sees the same ids, so a warp takes the
// same branch: no divergence, and the dout reads of a match are 32 neighbouring floats.
// launch: grid=(cdiv(channels, OWN_THREADS), vocab) block=OWN_THREADS
extern "C" __global__ void __launch_bounds__(OWN_THREADS)
embedding_backward_owner__tokens(const float* __restrict__ dout, const long long* __restrict__ idx,
                                 const float* __restrict__ wte, float* __restrict__ dwte,
                                 int batch, int time, int channels, int vocab)
{
    (void)wte;                                                   // only its shape matters (vocab)
    __shared__ long long tok[OWN_CHUNK];
    const int v = blockIdx.y;
    const int c = blockIdx.x * OWN_THREADS + threadIdx.x;
    const int positions = batch * time;
    float s = 0.0f;
    for (int p0 = 0; p0 < positions; p0 += OWN_CHUNK) {
        const int n = min(OWN_CHUNK, positions - p0);
        __syncthreads();                                         // the previous chunk is no longer read
        for (int k = threadIdx.x; k < n; k += OWN_THREADS) tok[k] = idx[p0 + k];
        __syncthreads();
        if (c < channels)                                        // threads past the row still load ids
            for (int k = 0; k < n; ++k)
                if (tok[k] == v) s += dout[(size_t)(p0 + k) * channels + c];
    }
    if (c < channels) dwte[(size_t)v * channels + c] = s;        // 0 for a token never read
}

// Step 2: one thread per (t, c) of dwpe sums its batch column, b = 0 first.
// launch: grid=cdiv(time * channels, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
embedding_backward_owner__positions(const float* __restrict__ dout, float* __restrict__ dwpe,
                                    int batch, int time, int channels)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;         // i = t * channels + c
    if (i >= time * channels) return;
    const size_t stride = (size_t)time * channels;               // from one batch to the next
    float s = 0.0f;
    for (int b = 0; b < batch; ++b) s += dout[b * stride + i];
    dwpe[i] = s;
}
