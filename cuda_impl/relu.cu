// relu.cu - elementwise y[i] = max(x[i], 0), float32; and its backward dx = dy * [x > 0].
//
// Forward variants (naive first); each adds one idea:
//   naive        one thread per element, ceil(n / 256) blocks. Already coalesced: thread i
//                touches element i, so a warp reads one contiguous 128-byte line.
//   grid_stride  a fixed grid (a few blocks per SM) walks the array in a loop with stride
//                gridDim.x * blockDim.x. Fewer blocks to schedule, and each thread keeps
//                several loads in flight across iterations; the same code works for any n.
//   vec4         each thread moves float4s (16 bytes): a quarter of the load/store
//                instructions for the same bytes. Needs 16-byte aligned pointers (cuMemAlloc
//                gives 256); the n % 4 leftovers (and any unaligned pointer) take a scalar path.
//
// relu reads 4 bytes and writes 4 bytes per element and does one comparison: it is purely
// memory-bound. The result must be exact: fmaxf(x, 0) is, and so is its NaN handling
// (fmaxf returns the non-NaN operand; inputs are checked finite before they get here).
//
// Backward variants (relu_backward: x, dy -> dx; a select, exact; at x == 0 the gradient is
// 0, as in PyTorch):
//   naive        one thread per element: dx[i] = x[i] > 0 ? dy[i] : 0. A select, not
//                dy * (x > 0): no multiply, and no -0 or NaN from one.
//   vec4         grid-stride float4 loads and stores: 12 bytes per element in a quarter of
//                the instructions.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/relu.py) by name: tensors x, y (x, dy, dx for the backward) and the
// dim n.
//
// Sizes are int: cheaper index math than 64-bit, and the harness refuses n >= 2^31.
// The grid-stride loops also add their stride to an index near n, so they take n <= 2^30.

#define THREADS 256                 // threads per block, every variant
#define BLOCKS_PER_SM 8             // grid-stride grids: 8 x 256 threads fill an SM, one wave

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
relu_naive(const float* __restrict__ x, float* __restrict__ y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;   // this thread's element
    if (i < n) y[i] = fmaxf(x[i], 0.0f);             // the last block runs past n: guard
}

// launch: grid=min(cdiv(n, THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
relu_grid_stride(const float* __restrict__ x, float* __restrict__ y, int n)
{
    int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = fmaxf(x[i], 0.0f);
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
relu_vec4(const float* __restrict__ x, float* __restrict__ y, int n)
{
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    int stride = gridDim.x * blockDim.x;
    // float4 accesses must be 16-byte aligned or the kernel faults: check, fall back to scalar.
    bool aligned = (((unsigned long long)x | (unsigned long long)y) & 15) == 0;
    int n4 = aligned ? n / 4 : 0;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (int i = tid; i < n4; i += stride) {
        float4 v = x4[i];
        y4[i] = make_float4(fmaxf(v.x, 0.0f), fmaxf(v.y, 0.0f), fmaxf(v.z, 0.0f), fmaxf(v.w, 0.0f));
    }
    for (int i = 4 * n4 + tid; i < n; i += stride)  // scalar tail: n % 4 elements
        y[i] = fmaxf(x[i], 0.0f);
}

// ------------------------------------------------------------------ relu_backward
__device__ __forceinline__ float relu_grad(float x, float dy)
{
    return x > 0.0f ? dy : 0.0f;
}

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
relu_backward_naive(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = relu_grad(x[i], dy[i]);
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
relu_backward_vec4(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, int n)
{
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    int stride = gridDim.x * blockDim.x;
    bool aligned = (((unsigned long long)x | (unsigned long long)dy | (unsigned long long)dx) & 15) == 0;
    int n4 = aligned ? n / 4 : 0;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* g4 = reinterpret_cast<const float4*>(dy);
    float4* d4 = reinterpret_cast<float4*>(dx);
    for (int i = tid; i < n4; i += stride) {
        float4 v = x4[i], g = g4[i];
        d4[i] = make_float4(relu_grad(v.x, g.x), relu_grad(v.y, g.y), relu_grad(v.z, g.z), relu_grad(v.w, g.w));
    }
    for (int i = 4 * n4 + tid; i < n; i += stride)   // scalar tail: n % 4 elements
        dx[i] = relu_grad(x[i], dy[i]);
}
