// adamw.cu - one AdamW step, in place on params, m and v (PyTorch's semantics: decoupled
// weight decay, bias correction by the step number t >= 1), float32:
//     p <- p * (1 - lr * weight_decay)
//     m <- beta1 * m + (1 - beta1) * g
//     v <- beta2 * v + (1 - beta2) * g^2
//     p <- p - (lr / bias1) * m / (sqrt(v) / sqrt(bias2) + eps),   bias_i = 1 - beta_i^t
//
// Variants (naive first); each adds one idea:
//   naive   one thread per element: read p, g, m, v (16 bytes), write p, m, v (12 bytes).
//           Each thread also works out the step's two bias corrections: cheap next to the
//           28 bytes it moves, but done n times.
//   vec4    a fixed grid walks the arrays with float4 loads and stores (4 reads + 3 writes of
//           16 bytes per 4 elements), and each thread computes the bias corrections once for
//           all the elements it visits. Needs 16-byte aligned pointers; the n % 4 leftovers
//           (and any unaligned pointer) take a scalar path.
//
// An optimizer step is pure bandwidth: 28 bytes and ~14 FLOP per element.
//
// Numerics. The per-element operations keep the order of torch.optim.AdamW (and of the NumPy
// idiom in harness/primitives/adamw.py): decay first, then m and v, then the update with the
// corrections applied to the step size and to sqrt(v). Division and sqrtf are IEEE (NVRTC's
// defaults -prec-div / -prec-sqrt; no --use_fast_math). ptxas may fuse a * b + c into one FMA:
// one rounding instead of two, never less accurate.
// The bias corrections are computed in double, as PyTorch does on the host (Python floats):
// 1 - beta2^t is a cancellation (1 - 0.999^3 = 0.003), and a float32 powf a few ulp off
// near 1 would be off by ~1e-4 relative after it, far beyond the update's tolerance.
// step_size = lr / bias1 and sqrt(bias2) are rounded to float32 once; the per-element work is
// float32.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/adamw.py) by name: tensors params, m, v (inout), grads (in), the dim n
// and the scalars lr, beta1, beta2, eps, weight_decay (float) and step (int).
// Sizes are int (the harness refuses n >= 2^31; the grid-stride loop takes n <= 2^30).

#define THREADS 256                 // threads per block, every variant
#define BLOCKS_PER_SM 8             // grid-stride grid: 8 x 256 threads fill an SM, one wave

struct AdamStep {                   // the step's constants, the same for every element
    float decay;                    // 1 - lr * weight_decay
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float step_size;                // lr / (1 - beta1^t)
    float bias2_sqrt;               // sqrt(1 - beta2^t)
    float eps;
};

__device__ __forceinline__ AdamStep adam_step(float lr, float beta1, float beta2, float eps, float weight_decay,
                                               int step)
{
    AdamStep s;
    s.decay = 1.0f - lr * weight_decay;
    s.beta1 = beta1;
    s.one_minus_beta1 = 1.0f - beta1;
    s.beta2 = beta2;
    s.one_minus_beta2 = 1.0f - beta2;
    const double bias1 = 1.0 - pow((double)beta1, (double)step);     // see the header: double, as
    const double bias2 = 1.0 - pow((double)beta2, (double)step);     // PyTorch computes them
    s.step_size = (float)((double)lr / bias1);
    s.bias2_sqrt = (float)sqrt(bias2);
    s.eps = eps;
    return s;
}

// One element, in torch's order. p, m, v are updated in place (registers here).
__device__ __forceinline__ void adam_update(const AdamStep& s, float& p, float g, float& m, float& v)
{
    p = p * s.decay;                                 // decoupled weight decay
    m = m * s.beta1 + s.one_minus_beta1 * g;
    v = v * s.beta2 + s.one_minus_beta2 * g * g;
    const float denom = sqrtf(v) / s.bias2_sqrt + s.eps;
    p = p - (s.step_size * m) / denom;
}

// launch: grid=cdiv(n, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
adamw_naive(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ m,
            float* __restrict__ v, int n, float lr, float beta1, float beta2, float eps, float weight_decay,
            int step)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const AdamStep s = adam_step(lr, beta1, beta2, eps, weight_decay, step);
    float p = params[i], mi = m[i], vi = v[i];
    adam_update(s, p, grads[i], mi, vi);
    params[i] = p;
    m[i] = mi;
    v[i] = vi;
}

// launch: grid=min(cdiv(n, 4 * THREADS), BLOCKS_PER_SM * sms) block=THREADS
// requires: n <= 1 << 30 -- the grid-stride loop adds its stride to an int index near n, so n is at most 2^30
extern "C" __global__ void __launch_bounds__(THREADS)
adamw_vec4(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ m,
           float* __restrict__ v, int n, float lr, float beta1, float beta2, float eps, float weight_decay,
           int step)
{
    const int tid = blockIdx.x * blockDim.x + threadIdx.x;
    const int stride = gridDim.x * blockDim.x;
    const AdamStep s = adam_step(lr, beta1, beta2, eps, weight_decay, step);   // once per thread
    bool aligned = (((unsigned long long)params | (unsigned long long)grads | (unsigned long long)m |
                     (unsigned long long)v) & 15) == 0;
    int n4 = aligned ? n / 4 : 0;
    float4* p4 = reinterpret_cast<float4*>(params);
    const float4* g4 = reinterpret_cast<const float4*>(grads);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    for (int i = tid; i < n4; i += stride) {
        float4 p = p4[i], g = g4[i], mi = m4[i], vi = v4[i];
        adam_update(s, p.x, g.x, mi.x, vi.x);
        adam_update(s, p.y, g.y, mi.y, vi.y);
        adam_update(s, p.z, g.z, mi.z, vi.z);
        adam_update(s, p.w, g.w, mi.w, vi.w);
        p4[i] = p;
        m4[i] = mi;
        v4[i] = vi;
    }
    for (int i = 4 * n4 + tid; i < n; i += stride) {  // scalar tail: n % 4 elements
        float p = params[i], mi = m[i], vi = v[i];
        adam_update(s, p, grads[i], mi, vi);
        params[i] = p;
        m[i] = mi;
        v[i] = vi;
    }
}
