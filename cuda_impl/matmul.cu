// matmul.cu - C = A @ B in float32: A is (M, K), B is (K, N), C is (M, N), all row-major;
// and its backward, dA = dC @ B^T (M, K) and dB = A^T @ dC (K, N).
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
// Backward variants (matmul_backward: A, B, dC -> dA, dB). Two products, so every variant is
// two or more kernels (steps); each product is the forward's dot product with one operand
// read transposed: dA[m, k] = sum_n dC[m, n] B[k, n], dB[k, n] = sum_m A[m, k] dC[m, n].
//   naive          __dA, __dB: one thread per output, threadIdx.x along the output's row.
//                  dA's B[k, n] reads stride N between neighbouring threads (uncoalesced);
//                  dB's are coalesced. Transposed operands change which reads are slow.
//   smem_tiles     __dA, __dB: own kernels, 32x32 tiles through shared memory as in the
//                  forward's smem_tiles, with the transpose done while a tile is staged:
//                  B's tile is read along its rows (coalesced) and stored transposed into a
//                  [32][33] array (the +1 column keeps the 32 stores of a warp in 32 banks).
//                  No extra pass, no scratch - but a third tiled kernel to maintain.
//   via_transpose  __transpose_B, __transpose_A write B^T and A^T to scratch (a 32x32 tiled
//                  transpose, coalesced both ways), then __dA and __dB run the forward's
//                  fastest kernel, warptile, unchanged: dA = dC @ B^T, dB = A^T @ dC.
// Why the fast path reuses the forward through transposes instead of growing its own tuned
// kernels: the transposes move O(MK + KN) bytes against O(MNK) FLOPs - under 2 % of the
// time at 1024^3 - and every improvement to the one tuned GEMM (tiles, vector loads, warp
// tiles) then speeds up the training step three times over. cuBLAS goes further and takes
// op(A), op(B) flags into the GEMM itself; smem_tiles shows what that costs to write by hand.
//
// Odd sizes: every tile load is guarded (zeros outside A and B, which add nothing to a dot
// product) and every store is guarded. float4 needs 16-byte aligned addresses: a row of A
// starts at r*K*4 bytes, aligned only if K % 4 == 0 (N % 4 == 0 for B and C), so the
// float4 paths are taken only then and fall back to scalar loads otherwise.
//
// Each kernel's launch geometry is on the `// launch:` line beside it (read by
// harness/backends/cuda/kernels.py); its parameters are matched to the declaration
// (harness/primitives/matmul.py) by name: tensors A, B, C (A, B, dC, dA, dB for the
// backward, and its scratch AT, BT) and the dims M, N, K, which the kernels take in cuBLAS's
// order. Sizes are int: the harness refuses any of A, B, C with
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

// The body is a __device__ function so that matmul_backward can run the same GEMM on other
// operands (its via_transpose variant); the kernel owns the shared memory and passes it in.
// C (M x N) = A (M x K) @ B (K x N), the block tile at (blockIdx.y, blockIdx.x).
__device__ __forceinline__ void warptile_gemm(const float* __restrict__ A, const float* __restrict__ B,
                                              float* __restrict__ C, int M, int N, int K,
                                              float* __restrict__ AsT, float* __restrict__ Bs)
{
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

// launch: grid=(cdiv(N, W_BN), cdiv(M, W_BM)) block=W_THREADS
extern "C" __global__ void __launch_bounds__(W_THREADS)
matmul_warptile(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                int M, int N, int K)
{
    __shared__ __align__(16) float AsT[W_BK * W_BM];     // transposed, as in `vectorized`
    __shared__ __align__(16) float Bs[W_BK * W_BN];
    warptile_gemm(A, B, C, M, N, K, AsT, Bs);
}

// ================================================================== matmul_backward

// ------------------------------------------------------------------ 1. naive
// dA (M x K): x -> k, y -> m.
// launch: grid=(cdiv(K, 32), cdiv(M, 32)) block=(32, 32)
extern "C" __global__ void __launch_bounds__(1024)
matmul_backward_naive__dA(const float* __restrict__ B, const float* __restrict__ dC, float* __restrict__ dA,
                          int M, int N, int K)
{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m < M && k < K) {
        float acc = 0.0f;
        for (int n = 0; n < N; ++n) acc += dC[m * N + n] * B[k * N + n];   // B^T[n, k]: stride N across the warp
        dA[m * K + k] = acc;
    }
}

// dB (K x N): x -> n, y -> k.
// launch: grid=(cdiv(N, 32), cdiv(K, 32)) block=(32, 32)
extern "C" __global__ void __launch_bounds__(1024)
matmul_backward_naive__dB(const float* __restrict__ A, const float* __restrict__ dC, float* __restrict__ dB,
                          int M, int N, int K)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int k = blockIdx.y * blockDim.y + threadIdx.y;
    if (k < K && n < N) {
        float acc = 0.0f;
        for (int m = 0; m < M; ++m) acc += A[m * K + k] * dC[m * N + n];   // A^T[k, m]: one word per warp
        dB[k * N + n] = acc;
    }
}

// ------------------------------------------------------------------ 2. smem_tiles
// dA tile (rows m, columns k) = sum over n-tiles of dC[m, n-tile] @ B[k, n-tile]^T.
// launch: grid=(cdiv(K, TILE), cdiv(M, TILE)) block=(TILE, TILE)
extern "C" __global__ void __launch_bounds__(1024)
matmul_backward_smem_tiles__dA(const float* __restrict__ B, const float* __restrict__ dC, float* __restrict__ dA,
                               int M, int N, int K)
{
    __shared__ float Cs[TILE][TILE];                 // Cs[m][n] = dC[m0 + m][n0 + n]
    __shared__ float Bt[TILE][TILE + 1];             // Bt[n][k] = B[k0 + k][n0 + n]: B^T's tile
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int m = blockIdx.y * TILE + ty, k = blockIdx.x * TILE + tx;
    const int kLoad = blockIdx.x * TILE + ty;        // the B row this thread stages
    float acc = 0.0f;
    for (int n0 = 0; n0 < N; n0 += TILE) {
        Cs[ty][tx] = (m < M && n0 + tx < N) ? dC[m * N + n0 + tx] : 0.0f;
        // Read B along its row (tx walks n: coalesced), store transposed: lane tx writes
        // Bt[tx][ty], 33 words apart - 32 different banks thanks to the padding column.
        Bt[tx][ty] = (kLoad < K && n0 + tx < N) ? B[kLoad * N + n0 + tx] : 0.0f;
        __syncthreads();
        for (int j = 0; j < TILE; ++j) acc += Cs[ty][j] * Bt[j][tx];
        __syncthreads();
    }
    if (m < M && k < K) dA[m * K + k] = acc;
}

// dB tile (rows k, columns n) = sum over m-tiles of A[m-tile, k]^T @ dC[m-tile, n].
// launch: grid=(cdiv(N, TILE), cdiv(K, TILE)) block=(TILE, TILE)
extern "C" __global__ void __launch_bounds__(1024)
matmul_backward_smem_tiles__dB(const float* __restrict__ A, const float* __restrict__ dC, float* __restrict__ dB,
                               int M, int N, int K)
{
    __shared__ float As[TILE][TILE];                 // As[m][k] = A[m0 + m][k0 + k]
    __shared__ float Cs[TILE][TILE];                 // Cs[m][n] = dC[m0 + m][n0 + n]
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int k = blockIdx.y * TILE + ty, n = blockIdx.x * TILE + tx;
    const int kLoad = blockIdx.y * TILE + tx;        // the A column this thread stages
    float acc = 0.0f;
    for (int m0 = 0; m0 < M; m0 += TILE) {
        As[ty][tx] = (m0 + ty < M && kLoad < K) ? A[(m0 + ty) * K + kLoad] : 0.0f;   // coalesced along k
        Cs[ty][tx] = (m0 + ty < M && n < N) ? dC[(m0 + ty) * N + n] : 0.0f;
        __syncthreads();
        for (int j = 0; j < TILE; ++j) acc += As[j][ty] * Cs[j][tx];   // As[j][ty]: one word per warp
        __syncthreads();
    }
    if (k < K && n < N) dB[k * N + n] = acc;
}

// ------------------------------------------------------------------ 3. via_transpose
// out (cols x rows) = in (rows x cols)^T, one 32x32 tile per block of 32 x 8 threads: each
// thread reads 4 elements along in's rows and writes 4 along out's rows, both coalesced.
#define TR_TILE 32
#define TR_ROWS 8

__device__ __forceinline__ void transpose_tile(const float* __restrict__ in, float* __restrict__ out,
                                               int rows, int cols, float (*tile)[TR_TILE + 1])
{
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = blockIdx.x * TR_TILE, r0 = blockIdx.y * TR_TILE;
    for (int j = ty; j < TR_TILE; j += TR_ROWS) {
        const int r = r0 + j, c = c0 + tx;
        if (r < rows && c < cols) tile[j][tx] = in[r * cols + c];
    }
    __syncthreads();
    for (int j = ty; j < TR_TILE; j += TR_ROWS) {
        const int oc = c0 + j, orow = r0 + tx;          // out[oc][orow] = in[orow][oc]
        if (oc < cols && orow < rows) out[oc * rows + orow] = tile[tx][j];
    }
}

// launch: grid=(cdiv(N, TR_TILE), cdiv(K, TR_TILE)) block=(TR_TILE, TR_ROWS)
// scratch: BT float (N, K) -- B transposed, the right operand of dA = dC @ B^T
extern "C" __global__ void __launch_bounds__(TR_TILE * TR_ROWS)
matmul_backward_via_transpose__transpose_B(const float* __restrict__ B, float* __restrict__ BT, int N, int K)
{
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    transpose_tile(B, BT, K, N, tile);
}

// launch: grid=(cdiv(K, TR_TILE), cdiv(M, TR_TILE)) block=(TR_TILE, TR_ROWS)
// scratch: AT float (K, M) -- A transposed, the left operand of dB = A^T @ dC
extern "C" __global__ void __launch_bounds__(TR_TILE * TR_ROWS)
matmul_backward_via_transpose__transpose_A(const float* __restrict__ A, float* __restrict__ AT, int M, int K)
{
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    transpose_tile(A, AT, M, K, tile);
}

// dA (M x K) = dC (M x N) @ BT (N x K): the forward's warptile with (M, N, K) -> (M, K, N).
// launch: grid=(cdiv(K, W_BN), cdiv(M, W_BM)) block=W_THREADS
extern "C" __global__ void __launch_bounds__(W_THREADS)
matmul_backward_via_transpose__dA(const float* __restrict__ dC, const float* __restrict__ BT, float* __restrict__ dA,
                                  int M, int N, int K)
{
    __shared__ __align__(16) float AsT[W_BK * W_BM];
    __shared__ __align__(16) float Bs[W_BK * W_BN];
    warptile_gemm(dC, BT, dA, M, K, N, AsT, Bs);
}

// dB (K x N) = AT (K x M) @ dC (M x N): warptile with (M, N, K) -> (K, N, M).
// launch: grid=(cdiv(N, W_BN), cdiv(K, W_BM)) block=W_THREADS
extern "C" __global__ void __launch_bounds__(W_THREADS)
matmul_backward_via_transpose__dB(const float* __restrict__ AT, const float* __restrict__ dC, float* __restrict__ dB,
                                  int M, int N, int K)
{
    __shared__ __align__(16) float AsT[W_BK * W_BM];
    __shared__ __align__(16) float Bs[W_BK * W_BN];
    warptile_gemm(AT, dC, dB, K, N, M, AsT, Bs);
}
