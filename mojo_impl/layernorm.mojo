# layernorm: row-wise layer normalisation of a (rows, cols) float32 matrix:
#
#     y[r, j] = (x[r, j] - mean_r) * rstd_r * gamma[j] + beta[j],
#     rstd_r  = 1 / sqrt(var_r + eps),   var_r = mean_j (x[r, j] - mean_r)^2   (biased)
#
# Two numerical traps, and what every variant here does about them:
#   * The variance comes from deviations, never from E[x^2] - E[x]^2: with a row offset
#     by 100, that difference of two large, nearly equal numbers loses most of float32's
#     24 bits.
#   * The deviations themselves. On a row near 1e4 with a spread of 1e-2, a float32 mean
#     is off by up to an ulp of 1e4 (~1e-3), and x - mean carries that error into every
#     element: 10 % of the spread once normalised (the NumPy idiom does exactly this).
#     So each row is first shifted by its first element x0: d = x - x0 is exact wherever
#     x is within a factor of 2 of x0 (Sterbenz's lemma), which is all of such a row; it
#     is small, and exactly 0 on a constant row. Layernorm is shift-invariant, so the
#     statistics are those of d, and the output is written as
#         ((x - x0) - mean_d) * rstd * gamma + beta,
#     never as x - (x0 + mean_d): x0 + mean_d would round at the offset's scale again.
#
# Variants (naive first), each registered as layernorm_<variant>:
#   scalar    two passes per row over d = x - x0 for the statistics and a third that
#             writes y, one element at a time. Pass 1 sums d for a first mean; pass 2
#             sums e = d - mean_d and e^2, and corrects the mean by mean(e): the
#             "corrected two-pass" algorithm. It matters when x0 is far from the mean (an
#             outlier first, as in [1000, 1, 2, 3, ...]): then d is large, and a float32
#             sum of 4097 such values, left to right, put the mean up to ~30 ulp off (N(0,1)
#             rows after a 1000), where the correction, a sum of small terms, brings it
#             back to half an ulp.
#   simd      the same three passes, F32_WIDTH lanes at a time with per-lane partial
#             sums merged at the end of the row; a scalar tail takes cols % width.
#   parallel  simd with the rows split over the worker threads (parallelize[]).
#   fused     parallel, with both statistics from ONE pass over d (Welford's update in
#             every lane, lanes merged with Chan's formula), then the write pass: the row
#             is read twice instead of three times, and the recurrence is as stable as
#             the two-pass formula.
#
# What to expect: a 4096-float row (16 KB) stays in L1 between passes, so the passes
# after the first are cheap and the win over NumPy (~13x at 4096 x 4096 with two
# threads) comes from not making full-size temporaries (NumPy writes x - mean, its
# square and three more arrays to memory) and from the threads. The shift costs one
# subtraction per element and pass. `fused` is about as fast as `parallel` (measured on
# the 2-core Xeon: 5.2 against 5.4 ms at 4096 x 4096, 47 against 58 us at the 10.8M
# GPT's 1024 x 384, 10 against 9 us at the default GPT's 512 x 64): Welford trades a
# cheap pass for more arithmetic per element. It matters where re-reading a row costs
# a trip to DRAM (very long rows, GPUs).
#
# The backward, from x, gamma and the incoming dy (the statistics are recomputed with
# the same shift by x0, so the stress rows pass backward too), with
# xhat = ((x - x0) - mean_d) * rstd and g = dy * gamma:
#
#     dx     = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))        per row
#     dgamma = sum_r dy * xhat,   dbeta = sum_r dy                     per column
#
# Backward variants, each registered as layernorm_backward_<variant>:
#   scalar    per row: the forward's three statistics passes, a pass for the two means,
#             a pass that writes dx and adds the row's share into dgamma and dbeta.
#   simd      the same passes, F32_WIDTH lanes at a time (scalar tails).
#   parallel  simd with the rows split over the worker threads. dgamma and dbeta are
#             sums over ALL rows, which no thread sees: each thread sums its rows into
#             its own partial dgamma/dbeta, and a second reduction adds the partials
#             once every thread is done (no locks, no atomics, and the same order of
#             additions on every run).
#   fused     parallel with one pass fewer: sum(g) and sum(g * e), e = d - mean_d, are
#             taken in the statistics' second pass, and the projection follows by
#             algebra, sum(g * xhat) = rstd * (sum(g * e) - correction * sum(g)). Three
#             passes per row instead of four.
#
# How Python calls them: layernorm_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/layernorm.py):
# x, gamma, beta, y | rows, cols | eps, and x, gamma, dy, dx, dgamma, dbeta | rows, cols | eps
# for the backward. layernorm_call and layernorm_backward_call at the bottom read them
# into the kernels' typed signatures; eps arrives as a Float32 argument.

from std.math import sqrt
from std.memory.alloc import unsafe_alloc
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Welford's update is a chain (each step needs the previous mean): four vectors' worth
# of independent lanes keep four chains in flight instead of waiting on one.
comptime WELFORD_LANES = 4 * F32_WIDTH
comptime WelfordVec = SIMD[DType.float32, WELFORD_LANES]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, or the call stays on one thread. Awake workers are what a long training
# step is made of: they fall asleep ~0.1-0.2 ms after their last task, so a run of
# one-thread calls between two matmuls makes the second one pay to wake them. At 1 << 17
# the 10.8M GPT's 1024 x 384 activations are split and its step took 308 ms, against
# 344 ms at 1 << 18 and 1 << 19 (two runs each, alternated, on the 2-core Xeon); the
# default GPT's activations (at most 512 x 256 = 1 << 17) stay on one thread.
comptime MIN_PER_WORKER = 1 << 17


# ----------------------------------------------------------------------------- scalar

def layernorm_scalar(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int, eps: Float32):
    for r in range(rows):
        var xr = x.unsafe_offset(r * cols)
        var yr = y.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]                 # the shift: d = x - x0 is exact near x0
        var s: Float32 = 0
        for j in range(cols):                        # pass 1: a first mean of d
            s += xr[unsafe_offset=j] - x0
        var mean_d = s / Float32(cols)
        var se: Float32 = 0
        var ss: Float32 = 0
        for j in range(cols):                        # pass 2: sums of e = d - mean_d and e^2
            var e = (xr[unsafe_offset=j] - x0) - mean_d
            se += e
            ss += e * e
        var correction = se / Float32(cols)          # ~0: what pass 1's rounding missed
        mean_d += correction
        var variance = max(ss / Float32(cols) - correction * correction, 0)
        var rstd = 1 / sqrt(variance + eps)
        for j in range(cols):                        # pass 3: normalise, scale, shift
            var xhat = ((xr[unsafe_offset=j] - x0) - mean_d) * rstd
            yr[unsafe_offset=j] = xhat * gamma[unsafe_offset=j] + beta[unsafe_offset=j]


# ----------------------------------------------------------------------------- simd

def row_sum_shifted(xr: F32Ptr, cols: Int, x0: Float32) -> Float32:
    """The sum of d = x - x0 over one row."""
    var s = Vec(0)
    var j = 0
    while j + F32_WIDTH <= cols:
        s += xr.unsafe_load[width=F32_WIDTH](j) - x0
        j += F32_WIDTH
    var total = s.reduce_add()
    while j < cols:                                  # scalar tail
        total += xr[unsafe_offset=j] - x0
        j += 1
    return total


def row_mean_variance(xr: F32Ptr, cols: Int, x0: Float32) -> Tuple[Float32, Float32]:
    """The corrected two-pass mean and biased variance of d = x - x0 (see `scalar`)."""
    var mean_d = row_sum_shifted(xr, cols, x0) / Float32(cols)
    var se = Vec(0)
    var ss = Vec(0)
    var j = 0
    while j + F32_WIDTH <= cols:
        var e = (xr.unsafe_load[width=F32_WIDTH](j) - x0) - mean_d
        se += e
        ss = e.fma(e, ss)                            # ss += e * e in one rounding
        j += F32_WIDTH
    var total_e = se.reduce_add()
    var total_ee = ss.reduce_add()
    while j < cols:
        var e = (xr[unsafe_offset=j] - x0) - mean_d
        total_e += e
        total_ee += e * e
        j += 1
    var correction = total_e / Float32(cols)
    return (mean_d + correction, max(total_ee / Float32(cols) - correction * correction, 0))


def write_normalised(
    xr: F32Ptr, gamma: F32Ptr, beta: F32Ptr, yr: F32Ptr, cols: Int, x0: Float32, mean_d: Float32, rstd: Float32
):
    """Writes y = ((x - x0) - mean_d) * rstd * gamma + beta: the shift is undone on the exact d."""
    var j = 0
    while j + F32_WIDTH <= cols:
        var xhat = ((xr.unsafe_load[width=F32_WIDTH](j) - x0) - mean_d) * rstd
        yr.unsafe_store[width=F32_WIDTH](
            j, xhat.fma(gamma.unsafe_load[width=F32_WIDTH](j), beta.unsafe_load[width=F32_WIDTH](j)))
        j += F32_WIDTH
    while j < cols:
        var xhat = ((xr[unsafe_offset=j] - x0) - mean_d) * rstd
        yr[unsafe_offset=j] = xhat * gamma[unsafe_offset=j] + beta[unsafe_offset=j]
        j += 1


def two_pass_rows(
    x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int, eps: Float32
):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]
        var stats = row_mean_variance(xr, cols, x0)
        var rstd = 1 / sqrt(stats[1] + eps)
        write_normalised(xr, gamma, beta, y.unsafe_offset(r * cols), cols, x0, stats[0], rstd)


def layernorm_simd(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int, eps: Float32):
    two_pass_rows(x, gamma, beta, y, 0, rows, cols, eps)


# ----------------------------------------------------------------------------- parallel

comptime RowRange = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Float32) thin -> None


def split_rows[rows_fn: RowRange](
    x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int, eps: Float32
):
    """Run rows_fn on contiguous blocks of rows, one block per worker thread."""
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        rows_fn(x, gamma, beta, y, 0, rows, cols, eps)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            rows_fn(x, gamma, beta, y, first, last, cols, eps)

    parallelize(work, workers)


def layernorm_parallel(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int, eps: Float32):
    split_rows[two_pass_rows](x, gamma, beta, y, rows, cols, eps)


# ----------------------------------------------------------------------------- fused

def merge_halves[w: Int](mean: SIMD[DType.float32, w], m2: SIMD[DType.float32, w], k: Float32) -> Tuple[Float32, Float32]:
    """Chan's merge of w lanes that each saw k values, as a tree: the upper half of the
    lanes into the lower half, log2(w) vector steps. Equal counts make the formula
    division-free: mean = mean_a + d / 2, m2 = m2_a + m2_b + d^2 * k / 2. (Merging the 64
    lanes one at a time, each step with its own divisions, made `fused` 7x slower than
    `simd` on the GPT's 64-float rows: 96 us against 14 for 512 rows.)"""
    comptime if w == 1:
        return (mean[0], m2[0])
    else:
        comptime h = w // 2
        var a = mean.slice[h, offset=0]()
        var d = mean.slice[h, offset=h]() - a
        return merge_halves[h](d.fma(SIMD[DType.float32, h](0.5), a),
                               (d * d).fma(SIMD[DType.float32, h](k * 0.5), m2.slice[h, offset=0]() + m2.slice[h, offset=h]()),
                               2 * k)


def welford_mean_variance(xr: F32Ptr, cols: Int, x0: Float32) -> Tuple[Float32, Float32]:
    """Mean and biased variance of d = x - x0 over a row, in one pass.

    Welford: after the k-th value v,  mean += (v - mean) / k,  m2 += (v - mean_old) * (v - mean_new);
    m2 / count is the variance. Each of WELFORD_LANES lanes runs this on its own strided
    share of the row (all lanes see the same count, so 1/k is one scalar per step); the
    scalar tail runs it too. Chan et al.'s formula merges two partial results exactly as
    if one pass had seen both: with d = mean_b - mean_a and n = n_a + n_b,
        mean = mean_a + d * n_b / n,   m2 = m2_a + m2_b + d^2 * n_a * n_b / n.
    """
    var mean = WelfordVec(0)
    var m2 = WelfordVec(0)
    var k = 0                                        # values seen by each lane
    var j = 0
    while j + WELFORD_LANES <= cols:
        var v = xr.unsafe_load[width=WELFORD_LANES](j) - x0
        k += 1
        var d = v - mean
        mean += d * (1 / Float32(k))
        m2 = d.fma(v - mean, m2)
        j += WELFORD_LANES
    # Merge the lanes, halves into halves (every lane saw k values: see merge_halves).
    # Rows shorter than WELFORD_LANES have k = 0 and go straight to the tail.
    var total_n: Float32 = 0
    var total_mean: Float32 = 0
    var total_m2: Float32 = 0
    if k > 0:
        var merged = merge_halves[WELFORD_LANES](mean, m2, Float32(k))
        total_mean, total_m2 = merged[0], merged[1]
        total_n = Float32(k * WELFORD_LANES)
    # The scalar tail: Welford one value at a time, continuing the merged result.
    while j < cols:
        var v = xr[unsafe_offset=j] - x0
        total_n += 1
        var d = v - total_mean
        total_mean += d / total_n
        total_m2 += d * (v - total_mean)
        j += 1
    return (total_mean, total_m2 / Float32(cols))


def welford_rows(
    x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int, eps: Float32
):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]
        var stats = welford_mean_variance(xr, cols, x0)
        var rstd = 1 / sqrt(stats[1] + eps)
        write_normalised(xr, gamma, beta, y.unsafe_offset(r * cols), cols, x0, stats[0], rstd)


def layernorm_fused(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int, eps: Float32):
    split_rows[welford_rows](x, gamma, beta, y, rows, cols, eps)


# ----------------------------------------------------------------------------- backward

def layernorm_backward_scalar(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, rows: Int, cols: Int,
    eps: Float32,
):
    for j in range(cols):
        dgamma[unsafe_offset=j] = 0
        dbeta[unsafe_offset=j] = 0
    var n = Float32(cols)
    for r in range(rows):
        var xr = x.unsafe_offset(r * cols)
        var gr = dy.unsafe_offset(r * cols)
        var outr = dx.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]                 # the forward's statistics, the forward's way
        var s: Float32 = 0
        for j in range(cols):
            s += xr[unsafe_offset=j] - x0
        var mean_d = s / n
        var se: Float32 = 0
        var ss: Float32 = 0
        for j in range(cols):
            var e = (xr[unsafe_offset=j] - x0) - mean_d
            se += e
            ss += e * e
        var correction = se / n
        mean_d += correction
        var rstd = 1 / sqrt(max(ss / n - correction * correction, 0) + eps)
        var sg: Float32 = 0                          # the two means of the dx formula
        var sgx: Float32 = 0
        for j in range(cols):
            var g = gr[unsafe_offset=j] * gamma[unsafe_offset=j]
            sg += g
            sgx += g * (((xr[unsafe_offset=j] - x0) - mean_d) * rstd)
        var mg = sg / n
        var mgx = sgx / n
        for j in range(cols):                        # dx, and this row's share of the column sums
            var xhat = ((xr[unsafe_offset=j] - x0) - mean_d) * rstd
            var g = gr[unsafe_offset=j] * gamma[unsafe_offset=j]
            outr[unsafe_offset=j] = rstd * (g - mg - xhat * mgx)
            dgamma[unsafe_offset=j] += gr[unsafe_offset=j] * xhat
            dbeta[unsafe_offset=j] += gr[unsafe_offset=j]


def zero(p: F32Ptr, n: Int):
    var j = 0
    while j + F32_WIDTH <= n:
        p.unsafe_store[width=F32_WIDTH](j, Vec(0))
        j += F32_WIDTH
    while j < n:
        p[unsafe_offset=j] = 0
        j += 1


def write_backward_row(
    xr: F32Ptr, gamma: F32Ptr, gr: F32Ptr, outr: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, cols: Int,
    x0: Float32, mean_d: Float32, rstd: Float32, mg: Float32, mgx: Float32,
):
    """Writes dx for one row, with the row's dy * xhat and dy added into dgamma and dbeta."""
    var j = 0
    while j + F32_WIDTH <= cols:
        var xhat = ((xr.unsafe_load[width=F32_WIDTH](j) - x0) - mean_d) * rstd
        var d = gr.unsafe_load[width=F32_WIDTH](j)
        var g = d * gamma.unsafe_load[width=F32_WIDTH](j)
        outr.unsafe_store[width=F32_WIDTH](j, rstd * (g - mg - xhat * mgx))
        dgamma.unsafe_store[width=F32_WIDTH](j, d.fma(xhat, dgamma.unsafe_load[width=F32_WIDTH](j)))
        dbeta.unsafe_store[width=F32_WIDTH](j, dbeta.unsafe_load[width=F32_WIDTH](j) + d)
        j += F32_WIDTH
    while j < cols:
        var xhat = ((xr[unsafe_offset=j] - x0) - mean_d) * rstd
        var d = gr[unsafe_offset=j]
        var g = d * gamma[unsafe_offset=j]
        outr[unsafe_offset=j] = rstd * (g - mg - xhat * mgx)
        dgamma[unsafe_offset=j] += d * xhat
        dbeta[unsafe_offset=j] += d
        j += 1


def backward_rows_simd(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, first: Int, last: Int,
    cols: Int, eps: Float32,
):
    """Rows first..last-1: dx, and their sums ADDED into dgamma and dbeta (zeroed by the caller)."""
    var n = Float32(cols)
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var gr = dy.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]
        var stats = row_mean_variance(xr, cols, x0)          # the forward's own statistics
        var mean_d = stats[0]
        var rstd = 1 / sqrt(stats[1] + eps)
        var sg = Vec(0)
        var sgx = Vec(0)
        var j = 0
        while j + F32_WIDTH <= cols:
            var g = gr.unsafe_load[width=F32_WIDTH](j) * gamma.unsafe_load[width=F32_WIDTH](j)
            sg += g
            sgx = g.fma(((xr.unsafe_load[width=F32_WIDTH](j) - x0) - mean_d) * rstd, sgx)
            j += F32_WIDTH
        var total_g = sg.reduce_add()
        var total_gx = sgx.reduce_add()
        while j < cols:
            var g = gr[unsafe_offset=j] * gamma[unsafe_offset=j]
            total_g += g
            total_gx += g * (((xr[unsafe_offset=j] - x0) - mean_d) * rstd)
            j += 1
        write_backward_row(xr, gamma, gr, dx.unsafe_offset(r * cols), dgamma, dbeta, cols, x0, mean_d, rstd,
                           total_g / n, total_gx / n)


def backward_rows_fused(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, first: Int, last: Int,
    cols: Int, eps: Float32,
):
    """As backward_rows_simd, with the two means taken in the statistics' second pass."""
    var n = Float32(cols)
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var gr = dy.unsafe_offset(r * cols)
        var x0 = xr[unsafe_offset=0]
        var mean_d = row_sum_shifted(xr, cols, x0) / n        # pass 1
        var se = Vec(0)                                       # pass 2: e, e^2, g, g * e
        var ss = Vec(0)
        var sg = Vec(0)
        var sge = Vec(0)
        var j = 0
        while j + F32_WIDTH <= cols:
            var e = (xr.unsafe_load[width=F32_WIDTH](j) - x0) - mean_d
            var g = gr.unsafe_load[width=F32_WIDTH](j) * gamma.unsafe_load[width=F32_WIDTH](j)
            se += e
            ss = e.fma(e, ss)
            sg += g
            sge = g.fma(e, sge)
            j += F32_WIDTH
        var total_e = se.reduce_add()
        var total_ee = ss.reduce_add()
        var total_g = sg.reduce_add()
        var total_ge = sge.reduce_add()
        while j < cols:
            var e = (xr[unsafe_offset=j] - x0) - mean_d
            var g = gr[unsafe_offset=j] * gamma[unsafe_offset=j]
            total_e += e
            total_ee += e * e
            total_g += g
            total_ge += g * e
            j += 1
        var correction = total_e / n
        var rstd = 1 / sqrt(max(total_ee / n - correction * correction, 0) + eps)
        # xhat = (e - correction) * rstd, so sum(g * xhat) = rstd * (sum(g * e) - correction * sum(g)).
        var mgx = rstd * (total_ge - correction * total_g) / n
        write_backward_row(xr, gamma, gr, dx.unsafe_offset(r * cols), dgamma, dbeta, cols, x0,
                           mean_d + correction, rstd, total_g / n, mgx)       # pass 3


comptime BackwardRows = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Float32) thin -> None


def split_backward_rows[rows_fn: BackwardRows](
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, rows: Int, cols: Int,
    eps: Float32,
):
    """Runs rows_fn on blocks of rows, one per worker thread, each summing into its own partial
    dgamma/dbeta; then the second reduction adds the partials, in worker order."""
    zero(dgamma, cols)
    zero(dbeta, cols)
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:                                 # one block: it sums straight into the outputs
        rows_fn(x, gamma, dy, dx, dgamma, dbeta, 0, rows, cols, eps)
        return
    var per_worker = (rows + workers - 1) // workers
    # Each worker's two partial rows start on a cache line of their own (a multiple of 16
    # floats apart): two threads never write into one line.
    var stride = (cols + 15) // 16 * 16
    var partial = unsafe_alloc[Float32](2 * workers * stride, alignment=64).unsafe_origin_cast[MutAnyOrigin]()

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        var pg = partial.unsafe_offset(2 * w * stride)
        var pb = pg.unsafe_offset(stride)
        zero(pg, cols)
        zero(pb, cols)
        if first < last:
            rows_fn(x, gamma, dy, dx, pg, pb, first, last, cols, eps)

    parallelize(work, workers)
    for w in range(workers):                         # the second reduction
        var pg = partial.unsafe_offset(2 * w * stride)
        var pb = pg.unsafe_offset(stride)
        var j = 0
        while j + F32_WIDTH <= cols:
            dgamma.unsafe_store[width=F32_WIDTH](
                j, dgamma.unsafe_load[width=F32_WIDTH](j) + pg.unsafe_load[width=F32_WIDTH](j))
            dbeta.unsafe_store[width=F32_WIDTH](j, dbeta.unsafe_load[width=F32_WIDTH](j) + pb.unsafe_load[width=F32_WIDTH](j))
            j += F32_WIDTH
        while j < cols:
            dgamma[unsafe_offset=j] += pg[unsafe_offset=j]
            dbeta[unsafe_offset=j] += pb[unsafe_offset=j]
            j += 1
    partial.unsafe_free()


def layernorm_backward_simd(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, rows: Int, cols: Int,
    eps: Float32,
):
    zero(dgamma, cols)
    zero(dbeta, cols)
    backward_rows_simd(x, gamma, dy, dx, dgamma, dbeta, 0, rows, cols, eps)


def layernorm_backward_parallel(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, rows: Int, cols: Int,
    eps: Float32,
):
    split_backward_rows[backward_rows_simd](x, gamma, dy, dx, dgamma, dbeta, rows, cols, eps)


def layernorm_backward_fused(
    x: F32Ptr, gamma: F32Ptr, dy: F32Ptr, dx: F32Ptr, dgamma: F32Ptr, dbeta: F32Ptr, rows: Int, cols: Int,
    eps: Float32,
):
    split_backward_rows[backward_rows_fused](x, gamma, dy, dx, dgamma, dbeta, rows, cols, eps)


# ----------------------------------------------------------------------------- Python

comptime LayernormKernel = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Float32) thin -> None


def layernorm_call[kernel: LayernormKernel](args: Args) raises:
    args.expect(7)                                   # x, gamma, beta, y | rows, cols | eps
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.int(4), args.int(5), args.float32(6))


comptime LayernormBackwardKernel = def(
    F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Float32
) thin -> None


def layernorm_backward_call[kernel: LayernormBackwardKernel](args: Args) raises:
    args.expect(9)                                   # x, gamma, dy, dx, dgamma, dbeta | rows, cols | eps
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.f32(4), args.f32(5), args.int(6),
           args.int(7), args.float32(8))


@export
def PyInit_layernorm() abi("C") -> PythonObject:
    try:
        var m = new_module("layernorm")
        add_variant[layernorm_call[layernorm_scalar]](m, "layernorm_scalar")
        add_variant[layernorm_call[layernorm_simd]](m, "layernorm_simd")
        add_variant[layernorm_call[layernorm_parallel]](m, "layernorm_parallel")
        add_variant[layernorm_call[layernorm_fused]](m, "layernorm_fused")
        add_variant[layernorm_backward_call[layernorm_backward_scalar]](m, "layernorm_backward_scalar")
        add_variant[layernorm_backward_call[layernorm_backward_simd]](m, "layernorm_backward_simd")
        add_variant[layernorm_backward_call[layernorm_backward_parallel]](m, "layernorm_backward_parallel")
        add_variant[layernorm_backward_call[layernorm_backward_fused]](m, "layernorm_backward_fused")
        return m.finalize()
    except e:
        abort(String("error creating the layernorm module: ", e))
