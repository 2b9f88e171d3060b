// gelu.cu - elementwise GELU, tanh approximation (GPT-2), float32:
//     gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// and its backward, with u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u):
//     dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
//
// Forward variants (naive first); each adds one idea:
//   naive        one thread per element, ceil(n / 256) blocks. Already coalesced: thread i
//                touches element i, so a warp reads one contiguous 128-byte line.
//   grid_stride  a fixed grid (a few blocks per SM) walks the array in a loop with stride
//                gridDim.x * blockDim.x. Fewer blocks to schedule, and each thread keeps
//                several loads in flight across iterations; the same code works for any n.
//   vec4         each thread moves float4s (16 bytes): a quarter of the load/store
//                instructions, and four independent tanhf calls per thread for the scheduler
//                to overlap. Needs 16-byte aligned pointers; the n % 4 leftovers (and any
//                unaligned pointer) take a scalar path.
//
// ~8 FLOP (plus one tanhf) per 8 bytes: still memory-bound on a GPU, as long as the math is
// cheap enough. tanhf here is the accurate one (a few ulp). --use_fast_math would swap in
// approximations whose error, near tanh's saturation, exceeds the catalogue's tolerance.
//
// Backward variants (gelu_backward: x, dy -> dx):
//   naive        one thread per element, the derivative recomputed from x (one tanhf): the
//                forward's output is not needed, so nothing but x is saved for it.
//   vec4         grid-stride float4 loads and stores, four independent tanhf per thread.
// The backward's error is dominated by t: for 3 < |x| < 6, 1 + t and 1 - t^2 are mostly the
// rounding of t, which x (1 + 0.134 x^2) amplifies (see harness/primitives/gelu.py). An
// accurate tanhf keeps it within the declared model; a fast one (or expf-based tanh) does not.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/gelu.py) by name: tensors x, y (x, dy, dx for the backward) and the
// dim n.
//
// Sizes are int: cheaper index math than 64-bit, and the harness refuses n >= 2^31.
// The grid-stride loops also add their stride to an index near n, so they take n <= 2^30.

#define THREADS 256                 // threads per block, every variant
#define BLOCKS_PER_SM 8             // grid-stride grids: 8 x 256 threads fill an SM, one wave

__device__ __forceinline__ float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f;             // sqrt(2 / pi)
    float inner = k * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
gelu_naive(const float* __restrict__ x, float* __restrict__ y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;   // this thread's element
    if (i < n) y[i] = gelu_tanh(x[i]);               // the last block runs past n: guard
}

// launch: grid=min(cdiv(n, THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
gelu_grid_stride(const float* __restrict__ x, float* __restrict__ y, int n)
{
    int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = gelu_tanh(x[i]);
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
gelu_vec4(const float* __restrict__ x, float* __restrict__ y, int n)
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
        y4[i] = make_float4(gelu_tanh(v.x), gelu_tanh(v.y), gelu_tanh(v.z), gelu_tanh(v.w));
    }
    for (int i = 4 * n4 + tid; i < n; i += stride)  // scalar tail: n % 4 elements
        y[i] = gelu_tanh(x[i]);
}

// ------------------------------------------------------------------ gelu_backward
__device__ __forceinline__ float gelu_tanh_grad(float x, float dy)
{
    const float s = 0.7978845608028654f;             // sqrt(2 / pi)
    const float k = 0.044715f;
    float x2 = x * x;
    float t = tanhf(s * (x + k * x2 * x));
    // d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,  du/dx = s (1 + 3k x^2)
    return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * s * (1.0f + 3.0f * k * x2));
}

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
gelu_backward_naive(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = gelu_tanh_grad(x[i], dy[i]);
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
gelu_backward_vec4(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, int n)
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
        d4[i] = make_float4(gelu_tanh_grad(v.x, g.x), gelu_tanh_grad(v.y, g.y),
                            gelu_tanh_grad(v.z, g.z), gelu_tanh_grad(v.w, g.w));
    }
    for (int i = 4 * n4 + tid; i < n; i += stride)   // scalar tail: n % 4 elements
        dx[i] = gelu_tanh_grad(x[i], dy[i]);
}
