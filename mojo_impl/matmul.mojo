# matmul: C = A @ B with A (M, K), B (K, N), C (M, N), float32, row-major; and its
# backward, dA = dC @ B^T (M, K) and dB = A^T @ dC (K, N).
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
#               thread, the split that reads least. Each thread copies ("packs") its
#               columns of B, one KC-deep slice at a time, into KC x NR micro-panels, so
#               that B is read as one straight stream. A register micro-kernel keeps an
#               MR x NR tile of C in MR * NV SIMD registers for a whole KC-long stretch
#               of k: per k it loads NV vectors of B, broadcasts MR values of A and
#               issues MR * NV FMAs. A is read where it lies, MC rows at a time (they
#               stay in L2): GotoBLAS packs A too, into KC x MR micro-panels, and that
#               copy cost more than it saved here (tiled_block says what was measured),
#               except for a transposed A, whose rows are A's columns, which is still
#               packed. Edges (M, N not multiples of the tile, any K) are zero-padded in
#               the packed copies and clipped when C is written.
#   adaptive    what BLAS libraries do at the small end (a training step's 64 x 64 x 256).
#               Packing pays for itself when each packed float is reused many times; at
#               these sizes both operands already sit in L1/L2 and the copies, the heap
#               allocations and the 6 x 64 tile's waste on narrow N are most of the time
#               (tiled: 28 us for 64 x 256 x 10, of which N = 10 uses 10 of 64 columns).
#               So below MIN_PARALLEL_FMAS the direct kernel runs the register tile on
#               A and B where they lie (A broadcast through its strides, B's rows loaded
#               as vectors), on one thread, allocating nothing, and picks the tile by the
#               columns left: 6 x 64, 12 x 32 or 16 x 16 floats of C with AVX-512 (6 x 16
#               and 12 x 8 with AVX2), the last partial vector masked instead of padded.
#               Above it, tiled. (Measured on a 2-core Sapphire Rapids VM: 64 x 256 x 10
#               in 3.8 us; 64 x 64 x 256 in 10.6 us, 198 GFLOP/s, ~94 % of one core's
#               physical FMA peak, where NumPy/OpenBLAS takes 22 us.)
#
# Backward variants, each registered as matmul_backward_<variant>. Both products are
# ordinary matmuls of transposed operands, so the question each variant answers is
# where the transposes go:
#   naive       the two sums straight from the formulas, one triple loop each:
#               dA[i, p] = sum_j dC[i, j] B[p, j] (both rows contiguous: a dot product)
#               and dB[p, j] = sum_i A[i, p] dC[i, j] (both read down columns: slow).
#   transposed  explicit transposed copies of B and A (heap, blocked copy), then the
#               forward's `vectorized` kernel for dA = dC @ B^T and dB = A^T @ dC. The
#               simplest reuse: correct by construction, and two copies per call.
#   tiled       the forward's tiled kernel with no copies at all: every routine reads
#               its operands through (row, column) strides, so B^T is B read with
#               strides (1, N) and A^T is A read with (1, K), and the transposes happen
#               inside the packing that tiled does anyway. One micro-kernel, three products.
#   adaptive    the forward's direct kernel below MIN_PARALLEL_FMAS, tiled above. The
#               direct kernel broadcasts its left operand one float at a time, so A^T
#               is free (strides (1, K)); it loads its right operand's rows as vectors,
#               and B^T's rows are B's columns, so B is transposed once into a stack
#               buffer, 16 x 16 blocks at a time in registers (four rounds of
#               interleaves; 64 shuffles per 256 floats). Reusing the forward's kernel
#               rather than writing a third one: it is already at the FMA peak, and
#               the transpose costs K * N copies against M * N * K FMAs.
#
# What to expect (results/amd-epyc-2core, a 2-core Zen 4 VM, 512^3-2048^3): naive ~1
# GFLOP/s, reordered ~6.6 (the memory order is fixed, but Mojo does not vectorize the
# loop by itself), vectorized 16-39, parallel 43-53, tiled 200-213, level with OpenBLAS. Up to `parallel` every FMA still
# loads a float of B and loads and stores a float of C; the tiled micro-kernel does
# MR * NV FMAs per NV + MR loads and no stores, on packed panels read contiguously:
# that is the step from tens of GFLOP/s to BLAS speed.
#
# How Python calls them: matmul_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/matmul.py): A, B, C | M, K, N,
# and A, B, dC, dA, dB | M, K, N for the backward. matmul_call and matmul_backward_call
# at the bottom read them into the kernels' typed signatures.

from std.algorithm.functional import vectorize
from std.math import iota
from std.memory import unsafe_stack_allocation
from std.memory.alloc import unsafe_alloc
from std.os import abort
from std.python import PythonObject
from std.sys.intrinsics import PrefetchOptions, masked_load, masked_store, prefetch
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
# the VM has parked them (measured on a 2-vCPU VM), and inside a training step they are
# usually parked: the call before was a one-thread one. Splitting saves half of the
# call's time, so it pays only once the call is worth more than twice that: below this
# many multiply-adds (~0.7 ms of work on one core) the call stays on one thread.
# (Measured in the default GPT's step: its fc, 512 x 64 x 256 = 8.4M, took 590 us a
# call on two threads under the old threshold of 4M, and 100 us on one.)
comptime MIN_PARALLEL_FMAS = 1 << 26


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


# Every routine from here on reads its operands through strides, A(i, p) = a[i * a_rs + p * a_cs]
# and B(p, j) = b[p * b_rs + j * b_cs], so that the backward's transposed products
# (dC @ B^T, A^T @ dC) run through the same code with other strides: no transposed copy.

comptime LOG2_WIDTH = 4 if F32_WIDTH == 16 else (3 if F32_WIDTH == 8 else 2)


def transpose_tile(src: F32Ptr, src_ld: Int, dst: F32Ptr, dst_ld: Int):
    """One F32_WIDTH x F32_WIDTH block, transposed in registers: F32_WIDTH row loads,
    log2(F32_WIDTH) rounds of interleaves, F32_WIDTH row stores. Each round interleaves
    row i with row i + F32_WIDTH/2 into rows 2i and 2i + 1 (the perfect shuffle); after
    log2 of the width rounds, row j holds what was column j. 64 shuffles move 256 floats
    with AVX-512, where a scalar loop makes 256 loads and 256 stores."""
    comptime HALF = F32_WIDTH // 2
    var r = Array[Vec, F32_WIDTH](fill=Vec(0))
    comptime for i in range(F32_WIDTH):
        r[i] = src.unsafe_load[width=F32_WIDTH](i * src_ld)
    comptime for _ in range(LOG2_WIDTH):
        var shuffled = Array[Vec, F32_WIDTH](fill=Vec(0))
        comptime for i in range(HALF):
            var both = r[i].interleave(r[i + HALF])
            shuffled[2 * i] = both.slice[F32_WIDTH, offset=0]()
            shuffled[2 * i + 1] = both.slice[F32_WIDTH, offset=F32_WIDTH]()
        r = shuffled^
    comptime for i in range(F32_WIDTH):
        dst.unsafe_store[width=F32_WIDTH](i * dst_ld, r[i])


def pack_b(b: F32Ptr, b_rs: Int, b_cs: Int, packed: F32Ptr, n: Int, p0: Int, kc: Int, j0: Int, panels: Int):
    """Copy B[p0 : p0+kc, j0 : j0+panels*NR] into `panels` micro-panels of kc x NR floats,
    k-major (each micro-panel is one straight stream for the micro-kernel), with zeros
    past column n. A row-major B is copied a row of NR at a time; a transposed one
    (B^T in the backward, b_rs = 1) a column at a time, each column a contiguous run."""
    for panel in range(panels):
        var dst = packed.unsafe_offset(panel * kc * NR)
        var j = j0 + panel * NR
        var width = min(NR, n - j)
        if b_cs == 1:
            for p in range(kc):
                var src = b.unsafe_offset((p0 + p) * b_rs + j)
                var row = dst.unsafe_offset(p * NR)
                if width == NR:
                    comptime for v in range(NV):
                        row.unsafe_store[width=F32_WIDTH](v * F32_WIDTH, src.unsafe_load[width=F32_WIDTH](v * F32_WIDTH))
                else:
                    for jj in range(NR):
                        row[unsafe_offset=jj] = src[unsafe_offset=jj] if jj < width else Float32(0)
        elif b_rs == 1:
            # B^T: the panel's columns are rows of B. Whole F32_WIDTH x F32_WIDTH blocks
            # are transposed in registers; the ragged end of kc and a partial panel are
            # copied element by element.
            var full_p = kc - kc % F32_WIDTH if width == NR else 0
            for jj in range(0, NR, F32_WIDTH):
                for p in range(0, full_p, F32_WIDTH):
                    transpose_tile(b.unsafe_offset((p0 + p) + (j + jj) * b_cs), b_cs,
                                   dst.unsafe_offset(p * NR + jj), NR)
            for jj in range(NR):
                if jj < width:
                    var src = b.unsafe_offset(p0 + (j + jj) * b_cs)
                    for p in range(full_p, kc):
                        dst[unsafe_offset=p * NR + jj] = src[unsafe_offset=p]
                else:
                    for p in range(kc):
                        dst[unsafe_offset=p * NR + jj] = 0
        else:                                        # any other strides, element by element
            for jj in range(NR):
                if jj < width:
                    var src = b.unsafe_offset(p0 * b_rs + (j + jj) * b_cs)
                    for p in range(kc):
                        dst[unsafe_offset=p * NR + jj] = src[unsafe_offset=p * b_rs]
                else:
                    for p in range(kc):
                        dst[unsafe_offset=p * NR + jj] = 0


def pack_a(a: F32Ptr, a_rs: Int, a_cs: Int, packed: F32Ptr, i0: Int, mc: Int, p0: Int, kc: Int):
    """Copy A[i0 : i0+mc, p0 : p0+kc] into MR-row micro-panels of kc x MR floats (one
    column of the panel is MR contiguous floats), with zeros past row mc. A transposed A
    (A^T in the backward, a_rs = 1) already holds those MR floats side by side."""
    for panel in range((mc + MR - 1) // MR):
        var dst = packed.unsafe_offset(panel * kc * MR)
        var first = i0 + panel * MR
        var rows = min(MR, mc - panel * MR)
        if a_rs == 1:
            for p in range(kc):
                var src = a.unsafe_offset((p0 + p) * a_cs + first)
                for r in range(MR):
                    dst[unsafe_offset=p * MR + r] = src[unsafe_offset=r] if r < rows else Float32(0)
        else:
            for r in range(MR):
                if r < rows:
                    var src = a.unsafe_offset((first + r) * a_rs + p0 * a_cs)
                    for p in range(kc):
                        dst[unsafe_offset=p * MR + r] = src[unsafe_offset=p * a_cs]
                else:
                    for p in range(kc):
                        dst[unsafe_offset=p * MR + r] = 0


def micro_kernel(
    kc: Int, ap: F32Ptr, a_rs: Int, a_cs: Int, bp: F32Ptr, c: F32Ptr, n: Int, rows: Int, cols: Int, accumulate: Bool
):
    """C[0:rows, 0:cols] (+)= A (MR x kc, A(r, p) = ap[r * a_rs + p * a_cs]) @ B micro-panel
    (kc x NR), with the MR x NR tile of C held in MR * NV registers for all kc steps. A is
    a packed micro-panel (strides (1, MR)) or A's own rows (strides (lda, 1)); rows past
    `rows` repeat the last real one (computed, never stored: no read outside A)."""
    if accumulate:
        # The C tile is needed only after the k loop: ask for it now, so that its cache
        # misses overlap the arithmetic instead of following it.
        for r in range(rows):
            comptime for v in range(NV):
                prefetch[PrefetchOptions().for_read().high_locality()](c.unsafe_offset(r * n + v * F32_WIDTH))
    var row = Array[F32Ptr, MR](fill=ap)
    comptime for r in range(MR):
        row[r] = ap.unsafe_offset(min(r, rows - 1) * a_rs)
    var acc = Array[Vec, MR * NV](fill=Vec(0))
    for p in range(kc):
        var bv = Array[Vec, NV](fill=Vec(0))
        comptime for v in range(NV):
            bv[v] = bp.unsafe_load[width=F32_WIDTH](p * NR + v * F32_WIDTH)
        var off = p * a_cs
        comptime for r in range(MR):
            var a_rp = Vec(row[r][unsafe_offset=off])           # broadcast one A value
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
    a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, b_rs: Int, b_cs: Int, c: F32Ptr, k: Int, n: Int,
    i_first: Int, i_last: Int, panel_first: Int, panel_last: Int,
):
    """C[i_first:i_last, the columns of panels panel_first..panel_last-1], packing its own
    copy of B (and of A when A's rows are not contiguous): the loop nest of GotoBLAS
    around the micro-kernel."""
    var panels = panel_last - panel_first
    # A row-major A is read where it lies: the micro-kernel broadcasts one float at a time
    # from MR row streams, which the hardware prefetcher follows, and the MC-row block it
    # reads stays in L2 for every panel after the first. Packing it was a scalar copy of
    # the whole of A per task on top of that read (measured on the 2-core Xeon: the 10.8M
    # GPT's matmuls took 9 % less time in its step without it, its proj 1024 x 1536 x 384
    # went from 324 to 396 GFLOP/s alone, and 2048^3 stayed at 360). A transposed A (A^T
    # in the backward) is still packed: its rows are A's columns, one float per cache line
    # and a page apart at large K (2048^3's backward fell from 336 to 221 GFLOP/s unpacked).
    var in_place = a_cs == 1
    var packed_b = unsafe_alloc[Float32](KC * panels * NR, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    var packed_a = unsafe_alloc[Float32](1 if in_place else MC * KC, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    for p0 in range(0, k, KC):                                 # a KC-deep slice of the product
        var kc = min(KC, k - p0)
        pack_b(b, b_rs, b_cs, packed_b, n, p0, kc, panel_first * NR, panels)
        for i0 in range(i_first, i_last, MC):                  # an MC-row block of A, into L2
            var mc = min(MC, i_last - i0)
            if not in_place:
                pack_a(a, a_rs, a_cs, packed_a, i0, mc, p0, kc)
            for panel in range(panels):                        # a B micro-panel, into L1
                var j = (panel_first + panel) * NR
                var bp = packed_b.unsafe_offset(panel * kc * NR)
                for ir in range(0, mc, MR):                    # MR rows of C at a time
                    var c_tile = c.unsafe_offset((i0 + ir) * n + j)
                    var rows = min(MR, mc - ir)
                    var cols = min(NR, n - j)
                    if in_place:
                        micro_kernel(kc, a.unsafe_offset((i0 + ir) * a_rs + p0), a_rs, 1, bp, c_tile, n,
                                     rows, cols, p0 > 0)
                    else:
                        micro_kernel(kc, packed_a.unsafe_offset(ir * kc), 1, MR, bp, c_tile, n, rows, cols, p0 > 0)
    packed_a.unsafe_free()
    packed_b.unsafe_free()


def tiled_product(a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, b_rs: Int, b_cs: Int, c: F32Ptr, m: Int, k: Int, n: Int):
    """C (m x n, row-major) = A (m x k) @ B (k x n), both read through their strides."""
    var panels = (n + NR - 1) // NR
    var workers = parallelism_level() if m * n * k >= MIN_PARALLEL_FMAS else 1
    # Split C into a grid_m x grid_n grid of tasks, one per worker: the shape whose
    # biggest task is smallest, and of those the one that reads least. Every task reads
    # its rows of A and packs its columns of B, so the grid reads A grid_n times and B
    # grid_m times: with A 6 MB and B 2.4 MB (the 10.8M GPT's proj), two row blocks read
    # 6 + 2 x 2.4 MB where two column blocks read 2 x 6 + 2.4. Rows are split in
    # multiples of MR, columns in panels.
    var grid_m = workers
    var grid_n = 1
    var best = (m + MR) * panels + 1               # more than any grid can give
    var best_reads = 0
    for gn in range(1, workers + 1):
        if workers % gn == 0:
            var gm = workers // gn
            var biggest = ((m + gm - 1) // gm + MR - 1) // MR * MR * ((panels + gn - 1) // gn)
            var reads = gn * m * k + gm * k * n
            if biggest < best or (biggest == best and reads < best_reads):
                best, best_reads, grid_m, grid_n = biggest, reads, gm, gn
    var panels_per_task = (panels + grid_n - 1) // grid_n
    var rows_per_task = ((m + grid_m - 1) // grid_m + MR - 1) // MR * MR

    def task(t: Int) {var}:
        var i_first = (t // grid_n) * rows_per_task
        var panel_first = (t % grid_n) * panels_per_task
        var i_last = min(m, i_first + rows_per_task)
        var panel_last = min(panels, panel_first + panels_per_task)
        if i_first < i_last and panel_first < panel_last:
            tiled_block(a, a_rs, a_cs, b, b_rs, b_cs, c, k, n, i_first, i_last, panel_first, panel_last)

    if grid_m * grid_n > 1:
        parallelize(task, grid_m * grid_n)
    else:
        task(0)


def matmul_tiled(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    tiled_product(a, k, 1, b, n, 1, c, m, k, n)


# ----------------------------------------------------------------------------- adaptive

# Register tiles for the direct kernel, one per width of what is left of C's columns.
# AVX-512 (32 registers): 6 x 64, 12 x 32 and 16 x 16 floats of C, with 24, 24 and 16
# accumulators. AVX2 (16 registers): 6 x 16 (the wide and mid tiles coincide) and 12 x 8.
comptime WIDE_MR = 6
comptime WIDE_NV = NV
comptime MID_MR = 12 if F32_WIDTH >= 16 else 6
comptime MID_NV = 2
comptime NARROW_MR = 16 if F32_WIDTH >= 16 else 12
comptime NARROW_NV = 1
# The backward's dA = dC @ B^T needs B^T with contiguous rows: up to this many floats it
# is transposed into a buffer on the stack (128 KB); beyond, the tiled path packs it.
comptime SCRATCH = 1 << 15


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes (none when count <= 0)."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(max(count, 0))))


def direct_tile[TM: Int, TV: Int, EDGE: Bool](
    a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, ldb: Int, c: F32Ptr, ldc: Int, k: Int, rows: Int, cols: Int
):
    """C[0:rows, 0:cols] = A[0:rows, :] @ B[:, 0:cols] with the TM x (TV * F32_WIDTH) tile
    of C in registers, reading A through its strides and B's rows where they lie.
    Rows past `rows` repeat the last real row (computed, never stored: no read outside
    A); with EDGE, B and C are read and written with lane masks past `cols`."""
    var row = Array[F32Ptr, TM](fill=a)
    comptime for r in range(TM):
        row[r] = a.unsafe_offset(min(r, rows - 1) * a_rs)
    var mask = Array[SIMD[DType.bool, F32_WIDTH], TV](fill=SIMD[DType.bool, F32_WIDTH](fill=True))
    comptime if EDGE:
        comptime for v in range(TV):
            mask[v] = first_lanes(cols - v * F32_WIDTH)
    var acc = Array[Vec, TM * TV](fill=Vec(0))
    for p in range(k):
        var bp = b.unsafe_offset(p * ldb)
        var bv = Array[Vec, TV](fill=Vec(0))
        comptime for v in range(TV):
            comptime if EDGE:
                bv[v] = masked_load[F32_WIDTH](bp.unsafe_offset(v * F32_WIDTH), mask[v], Vec(0))
            else:
                bv[v] = bp.unsafe_load[width=F32_WIDTH](v * F32_WIDTH)
        var off = p * a_cs
        comptime for r in range(TM):
            var a_rp = Vec(row[r][unsafe_offset=off])           # broadcast one A value
            comptime for v in range(TV):
                acc[r * TV + v] = a_rp.fma(bv[v], acc[r * TV + v])
    comptime for r in range(TM):
        if r < rows:
            comptime for v in range(TV):
                var dst = c.unsafe_offset(r * ldc + v * F32_WIDTH)
                comptime if EDGE:
                    masked_store[F32_WIDTH](acc[r * TV + v], dst, mask[v])
                else:
                    dst.unsafe_store[width=F32_WIDTH](0, acc[r * TV + v])


def direct_panel[TM: Int, TV: Int, EDGE: Bool](
    a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, ldb: Int, c: F32Ptr, m: Int, k: Int, n: Int, j: Int, cols: Int
):
    """Columns j..j+cols-1 of C, TM rows at a time: the panel of B stays in L1 throughout."""
    for i in range(0, m, TM):
        direct_tile[TM, TV, EDGE](a.unsafe_offset(i * a_rs), a_rs, a_cs, b.unsafe_offset(j), ldb,
                                  c.unsafe_offset(i * n + j), n, k, min(TM, m - i), cols)


def direct_product(a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, ldb: Int, c: F32Ptr, m: Int, k: Int, n: Int):
    """C (m x n, row-major) = A (m x k, any strides) @ B (k x n, rows ldb floats apart),
    with no packing, no allocation and no threads: wide panels of C, then one panel for
    the columns left over, in the tile that wastes least of them."""
    comptime WIDE = WIDE_NV * F32_WIDTH
    var j = 0
    while n - j >= WIDE:
        direct_panel[WIDE_MR, WIDE_NV, False](a, a_rs, a_cs, b, ldb, c, m, k, n, j, WIDE)
        j += WIDE
    var rest = n - j
    if rest > MID_NV * F32_WIDTH:
        direct_panel[WIDE_MR, WIDE_NV, True](a, a_rs, a_cs, b, ldb, c, m, k, n, j, rest)
    elif rest == MID_NV * F32_WIDTH:
        direct_panel[MID_MR, MID_NV, False](a, a_rs, a_cs, b, ldb, c, m, k, n, j, rest)
    elif rest > F32_WIDTH:
        direct_panel[MID_MR, MID_NV, True](a, a_rs, a_cs, b, ldb, c, m, k, n, j, rest)
    elif rest == F32_WIDTH:
        direct_panel[NARROW_MR, NARROW_NV, False](a, a_rs, a_cs, b, ldb, c, m, k, n, j, rest)
    elif rest > 0:
        direct_panel[NARROW_MR, NARROW_NV, True](a, a_rs, a_cs, b, ldb, c, m, k, n, j, rest)


def matmul_adaptive(a: F32Ptr, b: F32Ptr, c: F32Ptr, m: Int, k: Int, n: Int):
    if m * n * k >= MIN_PARALLEL_FMAS:
        tiled_product(a, k, 1, b, n, 1, c, m, k, n)
    else:
        direct_product(a, k, 1, b, n, c, m, k, n)


# ----------------------------------------------------------------------------- backward

def matmul_backward_naive(a: F32Ptr, b: F32Ptr, dc: F32Ptr, da: F32Ptr, db: F32Ptr, m: Int, k: Int, n: Int):
    for i in range(m):                               # dA[i, p] = sum_j dC[i, j] * B[p, j]
        for p in range(k):
            var s: Float32 = 0
            for j in range(n):
                s += dc[unsafe_offset=i * n + j] * b[unsafe_offset=p * n + j]
            da[unsafe_offset=i * k + p] = s
    for p in range(k):                               # dB[p, j] = sum_i A[i, p] * dC[i, j]
        for j in range(n):
            var s: Float32 = 0
            for i in range(m):
                s += a[unsafe_offset=i * k + p] * dc[unsafe_offset=i * n + j]
            db[unsafe_offset=p * n + j] = s


def transpose(src: F32Ptr, rows: Int, cols: Int, dst: F32Ptr):
    """Writes dst (cols x rows) = src (rows x cols)^T, in 16 x 16 blocks so that both the
    reads and the writes stay within a few cache lines at a time."""
    for i0 in range(0, rows, 16):
        var i1 = min(rows, i0 + 16)
        for j0 in range(0, cols, 16):
            var j1 = min(cols, j0 + 16)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[unsafe_offset=j * rows + i] = src[unsafe_offset=i * cols + j]


def transpose_fast(src: F32Ptr, rows: Int, cols: Int, dst: F32Ptr):
    """As transpose, with every whole F32_WIDTH x F32_WIDTH block done in registers and
    only the ragged right and bottom edges element by element."""
    var full_rows = rows - rows % F32_WIDTH
    var full_cols = cols - cols % F32_WIDTH
    for i0 in range(0, full_rows, F32_WIDTH):
        for j0 in range(0, full_cols, F32_WIDTH):
            transpose_tile(src.unsafe_offset(i0 * cols + j0), cols, dst.unsafe_offset(j0 * rows + i0), rows)
    for i in range(rows):                            # the edges
        var j_first = full_cols if i < full_rows else 0
        for j in range(j_first, cols):
            dst[unsafe_offset=j * rows + i] = src[unsafe_offset=i * cols + j]


def matmul_backward_transposed(a: F32Ptr, b: F32Ptr, dc: F32Ptr, da: F32Ptr, db: F32Ptr, m: Int, k: Int, n: Int):
    var bt = unsafe_alloc[Float32](n * k, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    var at = unsafe_alloc[Float32](k * m, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
    transpose(b, k, n, bt)                           # B^T: n x k
    transpose(a, m, k, at)                           # A^T: k x m
    vectorized_rows(dc, bt, da, 0, m, n, k)          # dA (m x k) = dC (m x n) @ B^T (n x k)
    vectorized_rows(at, dc, db, 0, k, m, n)          # dB (k x n) = A^T (k x m) @ dC (m x n)
    at.unsafe_free()
    bt.unsafe_free()


def matmul_backward_tiled(a: F32Ptr, b: F32Ptr, dc: F32Ptr, da: F32Ptr, db: F32Ptr, m: Int, k: Int, n: Int):
    # dA = dC @ B^T: B^T(p, j) = B[j, p], so B is read with strides (1, n).
    tiled_product(dc, n, 1, b, 1, n, da, m, n, k)
    # dB = A^T @ dC: A^T(i, p) = A[p, i], so A is read with strides (1, k).
    tiled_product(a, 1, k, dc, n, 1, db, k, m, n)


def matmul_backward_adaptive(a: F32Ptr, b: F32Ptr, dc: F32Ptr, da: F32Ptr, db: F32Ptr, m: Int, k: Int, n: Int):
    if m * n * k >= MIN_PARALLEL_FMAS:
        matmul_backward_tiled(a, b, dc, da, db, m, k, n)
        return
    # dA = dC @ B^T. The direct kernel loads rows of its right operand as vectors, and
    # B^T's rows are B's columns: transpose B once, on the stack, then run it.
    if n * k <= SCRATCH:
        var bt = unsafe_stack_allocation[SCRATCH, Float32, alignment=64]().unsafe_origin_cast[MutAnyOrigin]()
        transpose_fast(b, k, n, bt)
        direct_product(dc, n, 1, bt, k, da, m, n, k)
    else:
        tiled_product(dc, n, 1, b, 1, n, da, m, n, k)
    # dB = A^T @ dC. A^T is the broadcast operand, read one float at a time: its strides
    # (1, k) cost nothing, and dC's rows are already contiguous.
    direct_product(a, 1, k, dc, n, db, k, m, n)


# ----------------------------------------------------------------------------- Python

comptime MatmulKernel = def(F32Ptr, F32Ptr, F32Ptr, Int, Int, Int) thin -> None
comptime MatmulBackwardKernel = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int) thin -> None


def matmul_call[kernel: MatmulKernel](args: Args) raises:
    args.expect(6)                                   # A, B, C | M, K, N
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3), args.int(4), args.int(5))


def matmul_backward_call[kernel: MatmulBackwardKernel](args: Args) raises:
    args.expect(8)                                   # A, B, dC, dA, dB | M, K, N
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.f32(4), args.int(5), args.int(6), args.int(7))


@export
def PyInit_matmul() abi("C") -> PythonObject:
    try:
        var m = new_module("matmul")
        add_variant[matmul_call[matmul_naive]](m, "matmul_naive")
        add_variant[matmul_call[matmul_reordered]](m, "matmul_reordered")
        add_variant[matmul_call[matmul_vectorized]](m, "matmul_vectorized")
        add_variant[matmul_call[matmul_parallel]](m, "matmul_parallel")
        add_variant[matmul_call[matmul_tiled]](m, "matmul_tiled")
        add_variant[matmul_call[matmul_adaptive]](m, "matmul_adaptive")
        add_variant[matmul_backward_call[matmul_backward_naive]](m, "matmul_backward_naive")
        add_variant[matmul_backward_call[matmul_backward_transposed]](m, "matmul_backward_transposed")
        add_variant[matmul_backward_call[matmul_backward_tiled]](m, "matmul_backward_tiled")
        add_variant[matmul_backward_call[matmul_backward_adaptive]](m, "matmul_backward_adaptive")
        return m.finalize()
    except e:
        abort(String("error creating the matmul module: ", e))
