// bias_add.cu - the linear layer's bias, float32, row-major (rows, cols):
//     y[r, c] = x[r, c] + b[c]                 (bias_add)
//     db[c]   = sum_r dy[r, c]                 (bias_add_backward; dx = dy is not computed)
//
// Forward variants (naive first); each adds one idea:
//   naive        one thread per element of the flattened matrix; the bias index is i % cols,
//                an integer division per element.
//   rows_2d      a 2-D grid: threadIdx.x walks the columns (coalesced), each thread loads its
//                b[c] once into a register and reuses it for ROWS_PER_THREAD rows. No
//                division; b is read rows / ROWS_PER_THREAD times instead of rows times.
//   vec4         as rows_2d with float4 loads and stores along the row when cols % 4 == 0
//                (every row then starts 16-byte aligned); otherwise the scalar path.
//
// Backward variants (a column sum: every column is an independent reduction over the rows):
//   naive        one thread per column sums its column top to bottom. Coalesced already
//                (neighbouring threads read neighbouring columns of a row), but only `cols`
//                threads: a classifier's 10-column bias is 10 threads on a 132-SM GPU.
//   block_strip  one block per 32-column strip: 8 warps split the rows between them (warp w
//                takes rows w, w + 8, ...), and their 8 partial sums per column are added in
//                shared memory. 8x the threads, still one kernel, still deterministic.
//   split_rows   two kernels: the rows are cut into chunks of SR_ROWS, one block per (strip,
//                chunk) writes its partial column sums to scratch, and a second kernel adds a
//                column's partials in chunk order. The parallelism no longer depends on cols,
//                and the result is the same bits on every run and every GPU (no atomics: an
//                atomicAdd finishes in whatever order the hardware gets to it).
//
// Sums here are float32, added in a fixed order: the declared tolerance is the random-walk
// bound of a rows-term sum (harness/primitives/bias_add.py).
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration by name:
// tensors x, b, y (dy, db for the backward), the dims rows and cols, and, for split_rows, the
// scratch buffer `partials` declared on its first step's `// scratch:` line.
// Sizes are int (the harness refuses rows x cols >= 2^31); row offsets are size_t.

#define THREADS 256
#define ROWS_PER_THREAD 8           // rows_2d / vec4: rows one thread walks with its b[c] in a register

// ------------------------------------------------------------------ forward 1. naive
// launch: grid=cdiv(rows * cols, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
bias_add_naive(const float* __restrict__ x, const float* __restrict__ b, float* __restrict__ y, int rows, int cols)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;       // rows * cols < 2^31: fits in int
    if (i < rows * cols) y[i] = x[i] + b[i % cols];
}

// ------------------------------------------------------------------ forward 2. rows_2d
// blockIdx.x: a strip of THREADS columns; blockIdx.y: a group of ROWS_PER_THREAD rows.
// launch: grid=(cdiv(cols, THREADS), cdiv(rows, ROWS_PER_THREAD)) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
bias_add_rows_2d(const float* __restrict__ x, const float* __restrict__ b, float* __restrict__ y, int rows, int cols)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const float bc = b[c];                                     // loaded once, used ROWS_PER_THREAD times
    const int r0 = blockIdx.y * ROWS_PER_THREAD;
    const int r1 = min(rows, r0 + ROWS_PER_THREAD);
    for (int r = r0; r < r1; ++r) {
        const size_t i = (size_t)r * cols + c;
        y[i] = x[i] + bc;
    }
}

// ------------------------------------------------------------------ forward 3. vec4
// Each thread owns 4 consecutive columns; blockIdx.y a group of ROWS_PER_THREAD rows.
// launch: grid=(cdiv(cdiv(cols, 4), THREADS), cdiv(rows, ROWS_PER_THREAD)) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
bias_add_vec4(const float* __restrict__ x, const float* __restrict__ b, float* __restrict__ y, int rows, int cols)
{
    const int q = blockIdx.x * blockDim.x + threadIdx.x;       // this thread's quad of columns
    const int c = 4 * q;
    if (c >= cols) return;
    const int r0 = blockIdx.y * ROWS_PER_THREAD;
    const int r1 = min(rows, r0 + ROWS_PER_THREAD);
    // Rows start 16-byte aligned only when cols % 4 == 0 (and the buffers are aligned).
    const bool vec = (cols % 4 == 0) && ((((unsigned long long)x | (unsigned long long)b |
                                           (unsigned long long)y) & 15) == 0);
    if (vec) {
        const float4 bq = *reinterpret_cast<const float4*>(b + c);
        for (int r = r0; r < r1; ++r) {
            const size_t i = (size_t)r * cols + c;
            float4 v = *reinterpret_cast<const float4*>(x + i);
            *reinterpret_cast<float4*>(y + i) = make_float4(v.x + bq.x, v.y + bq.y, v.z + bq.z, v.w + bq.w);
        }
    } else {
        const int n = min(4, cols - c);                        // the last quad may be partial
        float bq[4];
        for (int j = 0; j < n; ++j) bq[j] = b[c + j];
        for (int r = r0; r < r1; ++r) {
            const size_t i = (size_t)r * cols + c;
            for (int j = 0; j < n; ++j) y[i + j] = x[i + j] + bq[j];
        }
    }
}

// ------------------------------------------------------------------ backward 1. naive
// launch: grid=cdiv(cols, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
bias_add_backward_naive(const float* __restrict__ dy, float* __restrict__ db, int rows, int cols)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s += dy[(size_t)r * cols + c];     // a warp reads 32 neighbours
    db[c] = s;
}

// ------------------------------------------------------------------ backward 2. block_strip
// 32 x 8 threads: threadIdx.x is the column in the strip, threadIdx.y the row group.
#define STRIP 32
#define ROW_GROUPS 8

// Each thread sums rows r0 + ty, r0 + ty + 8, ... < r1 of its column; the 8 row groups of a
// column are then added in shared memory, in order (group 0 first): deterministic.
__device__ __forceinline__ float strip_column_sum(const float* __restrict__ dy, int rows, int cols, int r0, int r1,
                                                  float (*part)[STRIP + 1])
{
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * STRIP + tx;
    float s = 0.0f;
    if (c < cols)
        for (int r = r0 + ty; r < r1; r += ROW_GROUPS) s += dy[(size_t)r * cols + c];
    part[ty][tx] = s;                                 // +1 column: no bank conflicts below
    __syncthreads();
    float total = 0.0f;
    if (ty == 0)
        for (int g = 0; g < ROW_GROUPS; ++g) total += part[g][tx];
    return total;                                     // meaningful in row group 0 only
}

// launch: grid=cdiv(cols, STRIP) block=(STRIP, ROW_GROUPS)
extern "C" __global__ void __launch_bounds__(STRIP * ROW_GROUPS)
bias_add_backward_block_strip(const float* __restrict__ dy, float* __restrict__ db, int rows, int cols)
{
    __shared__ float part[ROW_GROUPS][STRIP + 1];
    const float total = strip_column_sum(dy, rows, cols, 0, rows, part);
    const int c = blockIdx.x * STRIP + threadIdx.x;
    if (threadIdx.y == 0 && c < cols) db[c] = total;
}

// ------------------------------------------------------------------ backward 3. split_rows
#define SR_ROWS 256                 // rows per chunk: one block per (32-column strip, chunk)

// Step 1: block (strip, chunk) writes the chunk's column sums to partials[chunk][c].
// launch: grid=(cdiv(cols, STRIP), cdiv(rows, SR_ROWS)) block=(STRIP, ROW_GROUPS)
// scratch: partials float (cdiv(rows, SR_ROWS), cols) -- the column sums of each chunk of SR_ROWS rows
extern "C" __global__ void __launch_bounds__(STRIP * ROW_GROUPS)
bias_add_backward_split_rows__chunks(const float* __restrict__ dy, float* __restrict__ partials, int rows, int cols)
{
    __shared__ float part[ROW_GROUPS][STRIP + 1];
    const int r0 = blockIdx.y * SR_ROWS;
    const float total = strip_column_sum(dy, rows, cols, r0, min(rows, r0 + SR_ROWS), part);
    const int c = blockIdx.x * STRIP + threadIdx.x;
    if (threadIdx.y == 0 && c < cols) partials[(size_t)blockIdx.y * cols + c] = total;
}

// Step 2: one thread per column adds its chunks' partial sums, chunk 0 first.
// launch: grid=cdiv(cols, THREADS) block=THREADS
extern "C" __global__ void __launch_bounds__(THREADS)
bias_add_backward_split_rows__total(const float* __restrict__ partials, float* __restrict__ db, int rows, int cols)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int chunks = (rows + SR_ROWS - 1) / SR_ROWS;
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += partials[(size_t)k * cols + c];
    db[c] = s;
}
