# matmul: C = A @ B with A (M, K), B (K, N), C (M, N), float32, row-major.
#
# Variants (naive first), each registered as matmul_<variant>:
#   naive       the textbook triple loop i, j, k: C[i, j] = sum_k A[i, k] * B[k, j].
#               The inner loop walks down a COLUMN of B: every step jumps N floats in
#               memory and uses one float of the 64-byte line it loaded.
#   reordered   loop order i, k, j: for each A[i, k], add A[i, k] * B[k, :] into C[i, :].
#               Both inner-loop streams are now contiguous rows; same arithmetic.
#   vectorized  reordered, with the j loop written as vectorize[]: F32_WIDTH columns of
#               C per fused multiply-add, and vectorize finishes the N % width tail.
#   parallel    vectorized, with blocks of C's rows split over the worker threads
#               (each thread writes only its own rows, so no synchronisation).
#   tiled       what BLAS libraries do (GotoBLAS/BLIS). C is cut into one block per
#               thread. Each thread copies ("packs") its columns of B, one KC-deep slice
#               at a time, into KC x NR micro-panels, and its rows of A, MC x KC at a
#               time, into KC x MR micro-panels, so that both are read as straight
#               streams. A register micro-kernel keeps an MR x NR tile of C in MR * NV
#               SIMD registers for a whole KC-long stretch of k: per k it loads NV
#               vectors of B, broadcasts MR values of A and issues MR * NV FMAs. Edges
#               (M, N not multiples of the tile, any K) are zero-padded in the packed
#               copies and clipped when C is written.
#
# What to expect (results/amd-epyc-2core, a 2-core Zen 4 VM, 512^3-2048^3): naive ~1
# GFLOP/s, reordered ~6.6 (the memory order is fixed, but Mojo does not vectorize the
# loop by itself), vectorized 16-39, parallel 43-53, tiled 200-213, level with OpenBLAS. Up to `parallel` every FMA still
# loads a float of B and loads and stores a float of C; the tiled micro-kernel does
# MR * NV FMAs per NV + MR loads and no stores, on packed panels read contiguously:
# that is the step from tens of GFLOP/s to BLAS speed.
#
# How Python calls them: matmul_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/matmul.py): A, B, C | M, K, N.
# matmul_call at the bottom reads them into the kernels' typed signature.

from std.algorithm.functional import vectorize
from std.memory.alloc import unsafe_alloc
from std.os import abort
from std.python import PythonObject
from std.sys.intrinsics import PrefetchOptions, prefetch
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]


# ----------------------------------------------------------------------------- naive

def matmul_naive(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    for i in range(m):
        for j in range(n):
            var s: Float32 = 0
            for p in range(k):
                s += a[unsafe_offset=i * k + p] * b[unsafe_offset=p * n + j]
            c[unsafe_offset=i * n + j] = s


# ----------------------------------------------------------------------------- reordered

def matmul_reordered(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    for i in range(m):
        var c_row = c.unsafe_offset(i * n)
        for j in range(n):
            c_row[unsafe_offset=j] = 0
        for p in range(k):
            var a_ip = a[unsafe_offset=i * k + p]
            var b_row = b.unsafe_offset(p * n)
            for j in range(n):
                c_row[unsafe_offset=j] += a_ip * b_row[unsafe_offset=j]


# ----------------------------------------------------------------------------- vectorized

def vectorized_rows(a: F32Ptr, b: F32Ptr, c: F32Ptr, first: Int, last: Int, k: Int, n: Int):
    """Rows first..last-1 of C, i-k-j order with the j loop on SIMD vectors."""
    for i in range(first, last):
        var c_row = c.unsafe_offset(i * n)

        def zero[width: Int](j: Int) {var}:
            c_row.unsafe_store[width=width](j, SIMD[DType.float32, width](0))

        vectorize[F32_WIDTH](n, zero)
        for p in range(k):
            var a_ip = a[unsafe_offset=i * k + p]
            var b_row = b.unsafe_offset(p * n)

            def axpy[width: Int](j: Int) {var}:
                var acc = c_row.unsafe_load[width=width](j)
                c_row.unsafe_store[width=width](
                    j, SIMD[DType.float32, width](a_ip).fma(b_row.unsafe_load[width=width](j), acc))

            vectorize[F32_WIDTH](n, axpy)


def matmul_vectorized(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    vectorized_rows(a, b, c, 0, m, k, n)


# ----------------------------------------------------------------------------- parallel

# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): below this many multiply-adds
# (~0.2 ms of work) the call stays on one thread.
comptime MIN_PARALLEL_FMAS = 1 << 22


def matmul_parallel(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    var workers = min(parallelism_level(), m)
    if workers <= 1 or m * n * k < MIN_PARALLEL_FMAS:
        vectorized_rows(a, b, c, 0, m, k, n)
        return
    var per_worker = (m + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(m, first + per_worker)
        if first < last:
            vectorized_rows(a, b, c, first, last, k, n)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- tiled

# The register tile: MR rows x NR columns of C live in MR * NV SIMD registers.
# AVX2 has 16 vector registers: 6 x 2 accumulators + 2 for B + 1 broadcast = 15.
# AVX-512 has 32: 6 x 4 accumulators + 4 for B + 1 broadcast = 29.
comptime NV = 4 if F32_WIDTH >= 16 else 2           # SIMD vectors per tile row
comptime MR = 6
comptime NR = NV * F32_WIDTH
# Cache blocking. Per k step the micro-kernel reads NR + MR floats for MR * NV FMAs,
# little enough for L2 to feed, so KC is long: C is read and written K / KC times, and
# each of those trips misses the cache (tried on a Zen 4: KC = 128 -> 512 took 2048^3
# from ~180 to ~210 GFLOP/s). An MC x KC block of A (192 KB) is reused from L2 for
# every B micro-panel.
comptime KC = 512
comptime MC = 96                                     # a multiple of MR


def pack_b(b: F32Ptr, packed: F32Ptr, n: Int, p0: Int, kc: Int, j0: Int, panels: Int):
    """Copy B[p0 : p0+kc, j0 : j0+panels*NR] into `panels` micro-panels of kc x NR floats,
    k-major (each micro-panel is one straight stream for the micro-kernel), with zeros
    past column n."""
    for panel in range(panels):
        var dst = packed.unsafe_offset(panel * kc * NR)
        var j = j0 + panel * NR
        var width = min(NR, n - j)
        for p in range(kc):
            var src = b.unsafe_offset((p0 + p) * n + j)
            var row = dst.unsafe_offset(p * NR)
            if width == NR:
                comptime for v in range(NV):
                    row.unsafe_store[width=F32_WIDTH](v * F32_WIDTH, src.unsafe_load[width=F32_WIDTH](v * F32_WIDTH))
            else:
                for jj in range(NR):
                    row[unsafe_offset=jj] = src[unsafe_offset=jj] if jj < width else Float32(0)


def pack_a(a: F32Ptr, packed: F32Ptr, k: Int, i0: Int, mc: Int, p0: Int, kc: Int):
    """Copy A[i0 : i0+mc, p0 : p0+kc] into MR-row micro-panels of kc x MR floats (one
    column of the panel is MR contiguous floats), with zeros past row mc."""
    for panel in range((mc + MR - 1) // MR):
        var dst = packed.unsafe_offset(panel * kc * MR)
        var rows = min(MR, mc - panel * MR)
        for r in range(MR):
            if r < rows:
                var src = a.unsafe_offset((i0 + panel * MR + r) * k + p0)
                for p in range(kc):
                    dst[unsafe_offset=p * MR + r] = src[unsafe_offset=p]
            else:
                for p in range(kc):
                    dst[unsafe_offset=p * MR + r] = 0


def micro_kernel(kc: Int, ap: F32Ptr, bp: F32Ptr, c: F32Ptr, n: Int, rows: Int, cols: Int, accumulate: Bool):
    """C[0:rows, 0:cols] (+)= A micro-panel (kc x MR) @ B micro-panel (kc x NR), with the
    MR x NR tile of C held in MR * NV registers for all kc steps."""
    if accumulate:
        # The C tile is needed only after the k loop: ask for it now, so that its cache
        # misses overlap the arithmetic instead of following it.
        for r in range(rows):
            comptime for v in range(NV):
                prefetch[PrefetchOptions().for_read().high_locality()](c.unsafe_offset(r * n + v * F32_WIDTH))
    var acc = Array[Vec, MR * NV](fill=Vec(0))
    for p in range(kc):
        var bv = Array[Vec, NV](fill=Vec(0))
        comptime for v in range(NV):
            bv[v] = bp.unsafe_load[width=F32_WIDTH](p * NR + v * F32_WIDTH)
        comptime for r in range(MR):
            var a_rp = Vec(ap[unsafe_offset=p * MR + r])       # broadcast one A value
            comptime for v in range(NV):
                acc[r * NV + v] = a_rp.fma(bv[v], acc[r * NV + v])
    if rows == MR and cols == NR:                              # a full tile: vector stores
        comptime for r in range(MR):
            comptime for v in range(NV):
                var dst = c.unsafe_offset(r * n + v * F32_WIDTH)
                var value = acc[r * NV + v]
                if accumulate:
                    value += dst.unsafe_load[width=F32_WIDTH](0)
                dst.unsafe_store[width=F32_WIDTH](0, value)
    else:                                                      # an edge tile: only what is inside C
        for r in range(rows):
            for j in range(cols):
                var value = acc[r * NV + j // F32_WIDTH][j % F32_WIDTH]
                if accumulate:
                    value += c[unsafe_offset=r * n + j]
                c[unsafe_offset=r * n + j] = value


def tiled_block(
    a: F32Ptr, b: F32Ptr, c: F32Ptr, k: Int, n: Int, i_first: Int, i_last: Int, panel_first: Int, panel_last: Int
):
    """C[i_first:i_last, the columns of panels panel_first..panel_last-1], packing its own
    copies of B and A: the loop nest of GotoBLAS around the micro-kernel."""
    var panels = panel_last - panel_first
    var packed_b = unsafe_alloc[Float32](KC * panels * NR, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    var packed_a = unsafe_alloc[Float32](MC * KC, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    for p0 in range(0, k, KC):                                 # a KC-deep slice of the product
        var kc = min(KC, k - p0)
        pack_b(b, packed_b, n, p0, kc, panel_first * NR, panels)
        for i0 in range(i_first, i_last, MC):                  # an MC-row block of A, into L2
            var mc = min(MC, i_last - i0)
            pack_a(a, packed_a, k, i0, mc, p0, kc)
            for panel in range(panels):                        # a B micro-panel, into L1
                var j = (panel_first + panel) * NR
                var bp = packed_b.unsafe_offset(panel * kc * NR)
                for ir in range(0, mc, MR):                    # MR rows of C at a time
                    micro_kernel(kc, packed_a.unsafe_offset(ir * kc), bp, c.unsafe_offset((i0 + ir) * n + j),
                                 n, min(MR, mc - ir), min(NR, n - j), p0 > 0)
    packed_a.unsafe_free()
    packed_b.unsafe_free()


def matmul_tiled(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    var panels = (n + NR - 1) // NR
    var workers = parallelism_level() if m * n * k >= MIN_PARALLEL_FMAS else 1
    # Split C into a grid_m x grid_n grid of tasks, one per worker: the shape whose
    # biggest task is smallest (ties go to more column groups, since a task then packs
    # only its share of B). Rows are split in multiples of MR, columns in panels.
    var grid_m = workers
    var grid_n = 1
    var best = (m + MR) * panels + 1               # more than any grid can give
    for gn in range(1, workers + 1):
        if workers % gn == 0:
            var gm = workers // gn
            var biggest = ((m + gm - 1) // gm + MR - 1) // MR * MR * ((panels + gn - 1) // gn)
            if biggest <= best:
                best, grid_m, grid_n = biggest, gm, gn
    var panels_per_task = (panels + grid_n - 1) // grid_n
    var rows_per_task = ((m + grid_m - 1) // grid_m + MR - 1) // MR * MR

    def task(t: Int) {var}:
        var i_first = (t // grid_n) * rows_per_task
        var panel_first = (t % grid_n) * panels_per_task
        var i_last = min(m, i_first + rows_per_task)
        var panel_last = min(panels, panel_first + panels_per_task)
        if i_first < i_last and panel_first < panel_last:
            tiled_block(a, b, c, k, n, i_first, i_last, panel_first, panel_last)

    if grid_m * grid_n > 1:
        parallelize(task, grid_m * grid_n)
    else:
        task(0)


# ----------------------------------------------------------------------------- Python

comptime MatmulKernel = def(F32Ptr, F32Ptr, F32Ptr, Int, Int, Int) thin -> None


def matmul_call[kernel: MatmulKernel](args: Args) raises:
    args.expect(6)                                   # A, B, C | M, K, N
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3), args.int(4), args.int(5))


@export
def PyInit_matmul() abi("C") -> PythonObject:
    try:
        var m = new_module("matmul")
        add_variant[matmul_call[matmul_naive]](m, "matmul_naive")
        add_variant[matmul_call[matmul_reordered]](m, "matmul_reordered")
        add_variant[matmul_call[matmul_vectorized]](m, "matmul_vectorized")
        add_variant[matmul_call[matmul_parallel]](m, "matmul_parallel")
        add_variant[matmul_call[matmul_tiled]](m, "matmul_tiled")
        return m.finalize()
    except e:
        abort(String("error creating the matmul module: ", e))
