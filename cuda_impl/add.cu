// add.cu - elementwise out[i] = a[i] + b[i], float32; and its backward, da = db = dout.
//
// Forward variants (naive first); each adds one idea:
//   naive        one thread per element, ceil(n / 256) blocks. Already coalesced: thread i
//                touches element i, so a warp reads one contiguous 128-byte line per array.
//   grid_stride  a fixed grid (a few blocks per SM) walks the array in a loop with stride
//                gridDim.x * blockDim.x. Fewer blocks to schedule, and each thread keeps
//                several loads in flight across iterations; the same code works for any n.
//   vec4         each thread moves float4s (16 bytes): a quarter of the load/store
//                instructions for the same bytes, so the memory pipeline, not instruction
//                issue, is the limit. Needs 16-byte aligned pointers (cuMemAlloc gives 256);
//                the n % 4 leftovers (and any unaligned pointer) take a scalar path.
//
// add does 1 FLOP per 12 bytes moved: it is memory-bound, so the figure of merit is
// GB/s against the device's copy bandwidth, not GFLOP/s.
//
// Backward variants (add_backward: dout -> da, db; a residual connection hands its gradient
// to both branches unchanged):
//   naive        one thread per element reads dout[i] once and writes it twice: 12 bytes per
//                element. Two device-to-device copies would read dout twice: 16 bytes.
//   vec4         grid-stride float4 loads and stores, as add_vec4: the same 12 bytes per
//                element in a quarter of the instructions.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/add.py) by name: tensors a, b, out (dout, da, db for the backward)
// and the dim n.
//
// Sizes are int: cheaper index math than 64-bit, and the harness refuses n >= 2^31.
// The grid-stride loops also add their stride to an index near n, so they take n <= 2^30.

#define THREADS 256                 // threads per block, every variant
#define BLOCKS_PER_SM 8             // grid-stride grids: 8 x 256 threads fill an SM, one wave

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
add_naive(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int n)
{
    // blockIdx.x * blockDim.x + threadIdx.x: this thread's element. The grid is rounded up
    // to whole blocks, so the last block has threads past the end: they must do nothing.
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

// launch: grid=min(cdiv(n, THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
add_grid_stride(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int n)
{
    // The grid does not depend on n: each thread starts at its global index and jumps by
    // the total number of threads until it runs off the end.
    int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = a[i] + b[i];
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
add_vec4(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int n)
{
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    int stride = gridDim.x * blockDim.x;
    // A float4 load from an address that is not a multiple of 16 is a misaligned-address
    // fault, not a slow load. Check once per thread (the branch is uniform, so it is free).
    bool aligned = (((unsigned long long)a | (unsigned long long)b | (unsigned long long)out) & 15) == 0;
    int n4 = aligned ? n / 4 : 0;                    // whole float4s
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* out4 = reinterpret_cast<float4*>(out);
    for (int i = tid; i < n4; i += stride) {
        float4 x = a4[i], y = b4[i];
        out4[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
    // Scalar tail: the last n % 4 elements (all n of them when unaligned).
    for (int i = 4 * n4 + tid; i < n; i += stride)
        out[i] = a[i] + b[i];
}

// ------------------------------------------------------------------ add_backward
// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
add_backward_naive(const float* __restrict__ dout, float* __restrict__ da, float* __restrict__ db, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = dout[i];                            // one read, two writes: the gradient of
        da[i] = g;                                    // a + b with respect to each input is 1
        db[i] = g;
    }
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
add_backward_vec4(const float* __restrict__ dout, float* __restrict__ da, float* __restrict__ db, int n)
{
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    int stride = gridDim.x * blockDim.x;
    bool aligned = (((unsigned long long)dout | (unsigned long long)da | (unsigned long long)db) & 15) == 0;
    int n4 = aligned ? n / 4 : 0;
    const float4* g4 = reinterpret_cast<const float4*>(dout);
    float4* da4 = reinterpret_cast<float4*>(da);
    float4* db4 = reinterpret_cast<float4*>(db);
    for (int i = tid; i < n4; i += stride) {
        float4 g = g4[i];
        da4[i] = g;
        db4[i] = g;
    }
    for (int i = 4 * n4 + tid; i < n; i += stride) {  // scalar tail: n % 4 elements
        float g = dout[i];
        da[i] = g;
        db[i] = g;
    }
}
