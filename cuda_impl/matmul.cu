// matmul.cu - C = A @ B in float32: A is (M, K), B is (K, N), C is (M, N), all row-major.
//
// The SGEMM ladder of Simon Boehm's "How to optimize a CUDA matmul kernel" worklog
// (siboehm.com/articles/22/CUDA-MMM). Variants (naive first); each adds one idea:
//   naive         one thread per C element, threadIdx.x walking DOWN a column of C: the 32
//                 threads of a warp read 32 different rows of A and write 32 rows of C, 32
//                 separate memory transactions per instruction.
//   coalesced     the same arithmetic with threadIdx.x walking ALONG a row of C: a warp reads
//                 one row of A (a broadcast) and 32 consecutive floats of B, and writes 32
//                 consecutive floats of C - one transaction each.
//   smem_tiles    32x32 tiles of A and B are staged in shared memory by the block, then each
//                 value loaded from DRAM is used 32 times from shared memory.
//   blocktile_1d  each thread computes TM = 8 outputs down a column (64x64 block tile,
//                 BK = 8): one B value from shared memory feeds 8 FMAs held in registers.
//   blocktile_2d  each thread computes an 8x8 tile of outputs (128x128 block tile): 8 + 8
//                 shared-memory loads feed 64 FMAs, 4x the arithmetic intensity of 1-D tiling.
//   vectorized    as blocktile_2d, with float4 (128-bit) global loads and stores, and the A
//                 tile stored transposed in shared memory so the inner loop reads A and B with
//                 float4 too: a quarter of the load instructions.
//   warptile      a third level of tiling between block and thread: each warp owns a 64x64
//                 piece of the 128x128 block tile and each thread a set of 8x4 sub-tiles
//                 inside it, so a warp's shared-memory reads are contiguous (no bank
//                 conflicts) and its working set matches the register file; BK = 16.
//
// Odd sizes: every tile load is guarded (zeros outside A and B, which add nothing to a dot
// product) and every store is guarded. float4 needs 16-byte aligned addresses: a row of A
// starts at r*K*4 bytes, aligned only if K % 4 == 0 (N % 4 == 0 for B and C), so the
// float4 paths are taken only then and fall back to scalar loads otherwise.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/matmul.py) by name: tensors A, B, C and the dims M, N, K, which the
// kernels take in cuBLAS's order. Sizes are int: the harness refuses any of A, B, C with
// 2^31 elements or more, so every row * K + k index fits.

__device__ __forceinline__ bool aligned16(const void* p)
{
    return ((unsigned long long)p & 15) == 0;
}

// ------------------------------------------------------------------ 1. naive
// launch: grid=(cdiv(M, 32), cdiv(N, 32)) block=(32, 32)
extern "C" __global__ void __launch_bounds__(1024)
matmul_naive(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
             int M, int N, int K)
{
    const int row = blockIdx.x * blockDim.x + threadIdx.x;   // x -> row: the slow mapping
    const int col = blockIdx.y * blockDim.y + threadIdx.y;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
        C[row * N + col] = acc;
    }
}

// ------------------------------------------------------------------ 2. coalesced
// launch: grid=(cdiv(N, 32), cdiv(M, 32)) block=(32, 32)
extern "C" __global__ void __launch_bounds__(1024)
matmul_coalesced(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                 int M, int N, int K)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;   // x -> column: neighbours in a
    const int row = blockIdx.y * blockDim.y + threadIdx.y;   // warp touch neighbouring floats
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
        C[row * N + col] = acc;
    }
}

// ------------------------------------------------------------------ 3. smem_tiles
#define TILE 32

// launch: grid=(cdiv(N, TILE), cdiv(M, TILE)) block=(TILE, TILE)
extern "C" __global__ void __launch_bounds__(1024)
matmul_smem_tiles(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                  int M, int N, int K)
{
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        // Every thread loads one element of each tile (zeros past the edges), even a thread
        // whose own C element is outside C: the others need its share of the tile.
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(k0 + ty) * N + col] : 0.0f;
        __syncthreads();                             // the tile is complete ...
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();                             // ... and fully used before it is replaced
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// ------------------------------------------------------------------ 4. blocktile_1d
// 64x64 C tile per block, BK = 8, each of the 512 threads computes TM = 8 outputs in a column.
#define T1_BM 64
#define T1_BN 64
#define T1_BK 8
#define T1_TM 8

// launch: grid=(cdiv(N, T1_BN), cdiv(M, T1_BM)) block=512
extern "C" __global__ void __launch_bounds__(512)
matmul_blocktile_1d(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                    int M, int N, int K)
{
    __shared__ float As[T1_BM * T1_BK];              // 64 x 8 slice of A
    __shared__ float Bs[T1_BK * T1_BN];              // 8 x 64 slice of B
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * T1_BM, col0 = blockIdx.x * T1_BN;
    const int tCol = tid % T1_BN;                    // this thread's C column in the tile
    const int tRow = tid / T1_BN;                    // and its group of TM rows (0..7)
    const int aRow = tid / T1_BK, aCol = tid % T1_BK;   // 512 threads load the 512 elements
    const int bRow = tid / T1_BN, bCol = tid % T1_BN;   // of each slice, one each

    float acc[T1_TM];
#pragma unroll
    for (int i = 0; i < T1_TM; ++i) acc[i] = 0.0f;

    // Row/column guards that do not change with k0 are computed once, and each thread's
    // element addresses are set up once and offset by k0: fewer live registers for index math
    // (ptxas otherwise spills a few bytes here on sm_80).
    const bool aRowIn = row0 + aRow < M, bColIn = col0 + bCol < N;
    const float* Ap = A + (size_t)(row0 + aRow) * K + aCol;     // this thread's A element at k0 = 0
    const float* Bp = B + (size_t)bRow * N + col0 + bCol;       // and its B element
    for (int k0 = 0; k0 < K; k0 += T1_BK) {
        As[aRow * T1_BK + aCol] = (aRowIn && k0 + aCol < K) ? Ap[k0] : 0.0f;
        Bs[bRow * T1_BN + bCol] = (k0 + bRow < K && bColIn) ? Bp[(size_t)k0 * N] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int d = 0; d < T1_BK; ++d) {
            float b = Bs[d * T1_BN + tCol];          // one shared load, reused TM times
#pragma unroll
            for (int i = 0; i < T1_TM; ++i) acc[i] += As[(tRow * T1_TM + i) * T1_BK + d] * b;
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < T1_TM; ++i) {
        int r = row0 + tRow * T1_TM + i, c = col0 + tCol;
        if (r < M && c < N) C[r * N + c] = acc[i];
    }
}

// ------------------------------------------------------------------ 5. blocktile_2d
// 128x128 C tile per block, BK = 8, each of the 256 threads computes an 8x8 sub-tile.
#define T2_BM 128
#define T2_BN 128
#define T2_BK 8
#define T2_TM 8
#define T2_TN 8
#define T2_THREADS ((T2_BM / T2_TM) * (T2_BN / T2_TN))   // 256

// launch: grid=(cdiv(N, T2_BN), cdiv(M, T2_BM)) block=T2_THREADS
extern "C" __global__ void __launch_bounds__(T2_THREADS)
matmul_blocktile_2d(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                    int M, int N, int K)
{
    __shared__ float As[T2_BM * T2_BK];
    __shared__ float Bs[T2_BK * T2_BN];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * T2_BM, col0 = blockIdx.x * T2_BN;
    const int tCol = tid % (T2_BN / T2_TN), tRow = tid / (T2_BN / T2_TN);   // 16 x 16 threads
    // 1024 elements per slice, 256 threads: each loads 4, striding by whole rows.
    const int aRow = tid / T2_BK, aCol = tid % T2_BK, aStride = T2_THREADS / T2_BK;   // 32 rows
    const int bRow = tid / T2_BN, bCol = tid % T2_BN, bStride = T2_THREADS / T2_BN;   // 2 rows

    float acc[T2_TM][T2_TN], regM[T2_TM], regN[T2_TN];
#pragma unroll
    for (int i = 0; i < T2_TM; ++i)
#pragma unroll
        for (int j = 0; j < T2_TN; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += T2_BK) {
#pragma unroll
        for (int off = 0; off < T2_BM; off += aStride) {
            int ar = row0 + aRow + off, ac = k0 + aCol;
            As[(aRow + off) * T2_BK + aCol] = (ar < M && ac < K) ? A[ar * K + ac] : 0.0f;
        }
#pragma unroll
        for (int off = 0; off < T2_BK; off += bStride) {
            int br = k0 + bRow + off, bc = col0 + bCol;
            Bs[(bRow + off) * T2_BN + bCol] = (br < K && bc < N) ? B[br * N + bc] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int d = 0; d < T2_BK; ++d) {
            // 16 shared loads into registers, then 64 FMAs from registers only.
#pragma unroll
            for (int i = 0; i < T2_TM; ++i) regM[i] = As[(tRow * T2_TM + i) * T2_BK + d];
#pragma unroll
            for (int j = 0; j < T2_TN; ++j) regN[j] = Bs[d * T2_BN + tCol * T2_TN + j];
#pragma unroll
            for (int i = 0; i < T2_TM; ++i)
#pragma unroll
                for (int j = 0; j < T2_TN; ++j) acc[i][j] += regM[i] * regN[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < T2_TM; ++i)
#pragma unroll
        for (int j = 0; j < T2_TN; ++j) {
            int r = row0 + tRow * T2_TM + i, c = col0 + tCol * T2_TN + j;
            if (r < M && c < N) C[r * N + c] = acc[i][j];
        }
}

// ------------------------------------------------------------------ 6. vectorized
// Same tiling as blocktile_2d.

// Four consecutive floats of a row-major matrix at (r, c): one float4 load when allowed,
// else four guarded scalar loads (zeros outside the matrix).
__device__ __forceinline__ float4 load4(const float* __restrict__ p, int rows, int cols, int r, int c, bool vec)
{
    if (r >= rows || c >= cols) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float* q = p + (size_t)r * cols + c;
    if (vec) return *reinterpret_cast<const float4*>(q);   // vec: cols % 4 == 0, so c + 3 < cols
    return make_float4(q[0], c + 1 < cols ? q[1] : 0.0f, c + 2 < cols ? q[2] : 0.0f, c + 3 < cols ? q[3] : 0.0f);
}

// Four consecutive outputs of C at (r, c), guarded the same way.
__device__ __forceinline__ void store4(float* __restrict__ p, int rows, int cols, int r, int c, float4 v, bool vec)
{
    if (r >= rows || c >= cols) return;
    float* q = p + (size_t)r * cols + c;
    if (vec) { *reinterpret_cast<float4*>(q) = v; return; }
    q[0] = v.x;
    if (c + 1 < cols) q[1] = v.y;
    if (c + 2 < cols) q[2] = v.z;
    if (c + 3 < cols) q[3] = v.w;
}

// launch: grid=(cdiv(N, T2_BN), cdiv(M, T2_BM)) block=T2_THREADS
extern "C" __global__ void __launch_bounds__(T2_THREADS)
matmul_vectorized(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                  int M, int N, int K)
{
    // A is stored transposed (AsT[k][m]): the inner loop then reads 8 consecutive m values
    // for its 8 rows - two float4 shared loads instead of eight scalar ones.
    __shared__ __align__(16) float AsT[T2_BK * T2_BM];
    __shared__ __align__(16) float Bs[T2_BK * T2_BN];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * T2_BM, col0 = blockIdx.x * T2_BN;
    const int tCol = tid % (T2_BN / T2_TN), tRow = tid / (T2_BN / T2_TN);
    // Each slice is 256 float4s: one per thread. A: 128 rows x 2 float4; B: 8 rows x 32 float4.
    const int aRow = tid / (T2_BK / 4), aQuad = tid % (T2_BK / 4);
    const int bRow = tid / (T2_BN / 4), bQuad = tid % (T2_BN / 4);
    const bool vecA = (K % 4 == 0) && aligned16(A);
    const bool vecB = (N % 4 == 0) && aligned16(B);
    const bool vecC = (N % 4 == 0) && aligned16(C);

    float acc[T2_TM][T2_TN];
#pragma unroll
    for (int i = 0; i < T2_TM; ++i)
#pragma unroll
        for (int j = 0; j < T2_TN; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += T2_BK) {
        float4 a = load4(A, M, K, row0 + aRow, k0 + aQuad * 4, vecA);
        AsT[(aQuad * 4 + 0) * T2_BM + aRow] = a.x;
        AsT[(aQuad * 4 + 1) * T2_BM + aRow] = a.y;
        AsT[(aQuad * 4 + 2) * T2_BM + aRow] = a.z;
        AsT[(aQuad * 4 + 3) * T2_BM + aRow] = a.w;
        *reinterpret_cast<float4*>(&Bs[bRow * T2_BN + bQuad * 4]) = load4(B, K, N, k0 + bRow, col0 + bQuad * 4, vecB);
        __syncthreads();
#pragma unroll
        for (int d = 0; d < T2_BK; ++d) {
            float4 m0 = *reinterpret_cast<const float4*>(&AsT[d * T2_BM + tRow * T2_TM]);
            float4 m1 = *reinterpret_cast<const float4*>(&AsT[d * T2_BM + tRow * T2_TM + 4]);
            float4 n0 = *reinterpret_cast<const float4*>(&Bs[d * T2_BN + tCol * T2_TN]);
            float4 n1 = *reinterpret_cast<const float4*>(&Bs[d * T2_BN + tCol * T2_TN + 4]);
            float regM[8] = {m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w};
            float regN[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
#pragma unroll
            for (int i = 0; i < T2_TM; ++i)
#pragma unroll
                for (int j = 0; j < T2_TN; ++j) acc[i][j] += regM[i] * regN[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < T2_TM; ++i) {
        int r = row0 + tRow * T2_TM + i, c = col0 + tCol * T2_TN;
        store4(C, M, N, r, c, make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), vecC);
        store4(C, M, N, r, c + 4, make_float4(acc[i][4], acc[i][5], acc[i][6], acc[i][7]), vecC);
    }
}

// ------------------------------------------------------------------ 7. warptile
// 128x128 C tile per block, BK = 16, 128 threads = 4 warps, each warp a 64x64 quarter.
// Inside a warp the 64x64 piece is WNITER = 4 sub-tiles of 64x16; the 32 threads form an
// 8 x 4 grid over one sub-tile and each computes TM x TN = 8 x 4 outputs in each of the
// four, 128 outputs per thread in all. Neighbouring lanes read neighbouring shared-memory
// words, and the whole warp reuses each loaded A value 16 times and each B value 8 times.
#define W_BM 128
#define W_BN 128
#define W_BK 16
#define W_WM 64
#define W_WN 64
#define W_WNITER 4
#define W_TM 8
#define W_TN 4
#define W_THREADS 128
#define W_WMITER ((W_WM * W_WN) / (32 * W_TM * W_TN * W_WNITER))   // 1
#define W_WSUBM (W_WM / W_WMITER)                                  // 64
#define W_WSUBN (W_WN / W_WNITER)                                  // 16

// launch: grid=(cdiv(N, W_BN), cdiv(M, W_BM)) block=W_THREADS
extern "C" __global__ void __launch_bounds__(W_THREADS)
matmul_warptile(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                int M, int N, int K)
{
    __shared__ __align__(16) float AsT[W_BK * W_BM];     // transposed, as in `vectorized`
    __shared__ __align__(16) float Bs[W_BK * W_BN];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * W_BM, col0 = blockIdx.x * W_BN;
    const int warp = tid / 32, lane = tid % 32;
    const int warpRow = warp / (W_BN / W_WN), warpCol = warp % (W_BN / W_WN);
    const int tColInWarp = lane % (W_WSUBN / W_TN);      // 0..3
    const int tRowInWarp = lane / (W_WSUBN / W_TN);      // 0..7
    // Slices are 512 float4s each: every thread loads 4 of A and 4 of B per step.
    const int aRow = tid / (W_BK / 4), aQuad = tid % (W_BK / 4), aStride = W_THREADS / (W_BK / 4);   // 32
    const int bRow = tid / (W_BN / 4), bQuad = tid % (W_BN / 4), bStride = W_THREADS / (W_BN / 4);   // 4
    const bool vecA = (K % 4 == 0) && aligned16(A);
    const bool vecB = (N % 4 == 0) && aligned16(B);
    const bool vecC = (N % 4 == 0) && aligned16(C);

    float acc[W_WMITER * W_TM * W_WNITER * W_TN];
    float regM[W_WMITER * W_TM], regN[W_WNITER * W_TN];
#pragma unroll
    for (int i = 0; i < W_WMITER * W_TM * W_WNITER * W_TN; ++i) acc[i] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += W_BK) {
#pragma unroll
        for (int off = 0; off < W_BM; off += aStride) {
            float4 a = load4(A, M, K, row0 + aRow + off, k0 + aQuad * 4, vecA);
            AsT[(aQuad * 4 + 0) * W_BM + aRow + off] = a.x;
            AsT[(aQuad * 4 + 1) * W_BM + aRow + off] = a.y;
            AsT[(aQuad * 4 + 2) * W_BM + aRow + off] = a.z;
            AsT[(aQuad * 4 + 3) * W_BM + aRow + off] = a.w;
        }
#pragma unroll
        for (int off = 0; off < W_BK; off += bStride)
            *reinterpret_cast<float4*>(&Bs[(bRow + off) * W_BN + bQuad * 4]) =
                load4(B, K, N, k0 + bRow + off, col0 + bQuad * 4, vecB);
        __syncthreads();
#pragma unroll
        for (int d = 0; d < W_BK; ++d) {
#pragma unroll
            for (int wm = 0; wm < W_WMITER; ++wm)
#pragma unroll
                for (int i = 0; i < W_TM; ++i)
                    regM[wm * W_TM + i] = AsT[d * W_BM + warpRow * W_WM + wm * W_WSUBM + tRowInWarp * W_TM + i];
#pragma unroll
            for (int wn = 0; wn < W_WNITER; ++wn)
#pragma unroll
                for (int j = 0; j < W_TN; ++j)
                    regN[wn * W_TN + j] = Bs[d * W_BN + warpCol * W_WN + wn * W_WSUBN + tColInWarp * W_TN + j];
#pragma unroll
            for (int wm = 0; wm < W_WMITER; ++wm)
#pragma unroll
                for (int wn = 0; wn < W_WNITER; ++wn)
#pragma unroll
                    for (int i = 0; i < W_TM; ++i)
#pragma unroll
                        for (int j = 0; j < W_TN; ++j)
                            acc[(wm * W_TM + i) * (W_WNITER * W_TN) + wn * W_TN + j] +=
                                regM[wm * W_TM + i] * regN[wn * W_TN + j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int wm = 0; wm < W_WMITER; ++wm)
#pragma unroll
        for (int wn = 0; wn < W_WNITER; ++wn)
#pragma unroll
            for (int i = 0; i < W_TM; ++i) {
                int r = row0 + warpRow * W_WM + wm * W_WSUBM + tRowInWarp * W_TM + i;
                int c = col0 + warpCol * W_WN + wn * W_WSUBN + tColInWarp * W_TN;
                const float* a = &acc[(wm * W_TM + i) * (W_WNITER * W_TN) + wn * W_TN];
                store4(C, M, N, r, c, make_float4(a[0], a[1], a[2], a[3]), vecC);
            }
}
