# layernorm: row-wise layer normalisation of a (rows, cols) float32 matrix:
#
#     y[r, j] = (x[r, j] - mean_r) * rstd_r * gamma[j] + beta[j],
#     rstd_r  = 1 / sqrt(var_r + 1e-5),   var_r = mean_j (x[r, j] - mean_r)^2   (biased)
#
# The variance is always computed from deviations (x - mean), never as E[x^2] - E[x]^2:
# with a row offset by 100, or one outlier of 1000 among small values, that difference
# of two large, nearly equal numbers loses most of float32's 24 bits.
#
# Variants (naive first); Python calls each as layernorm.<variant>(x, gamma, beta, y, rows, cols):
#   scalar    two passes per row for the statistics and a third that writes y, one
#             element at a time. Pass 1 sums x for a first mean; pass 2 sums the
#             deviations d = x - mean and d^2, and corrects the mean by mean(d): the
#             "corrected two-pass" algorithm. Without the correction a float32 sum of
#             4097 equal values misses their mean by up to ~1000 ulp, and a constant row
#             (variance 0, so rstd = 1/sqrt(eps) = 316) turns that into a visible error.
#   simd      the same three passes, F32_WIDTH lanes at a time with per-lane partial
#             sums merged at the end of the row; a scalar tail takes cols % width.
#   parallel  simd with the rows split over the worker threads (parallelize[]).
#   fused     parallel, with both statistics from ONE pass over the row (Welford's
#             update in every lane, lanes merged with Chan's formula), then the write
#             pass: the row is read twice instead of three times, and the recurrence is
#             as stable as the two-pass formula.
#
# What to expect: a 4096-float row (16 KB) stays in L1 between passes, so the passes
# after the first are cheap and the win over NumPy (~13x at 4096 x 4096 with two
# threads) comes from not making full-size temporaries (NumPy writes x - mean, its
# square and three more arrays to memory) and from the threads. Here `fused` is no
# faster than `parallel`: Welford trades a cheap pass for more arithmetic per element.
# It matters where re-reading a row costs a trip to DRAM (very long rows, GPUs).

from std.math import sqrt
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import F32Ptr, F32_WIDTH, layernorm_entry, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Welford's update is a chain (each step needs the previous mean): four vectors' worth
# of independent lanes keep four chains in flight instead of waiting on one.
comptime WELFORD_LANES = 4 * F32_WIDTH
comptime WelfordVec = SIMD[DType.float32, WELFORD_LANES]
comptime EPS: Float32 = 1e-5
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, ~0.2 ms of work, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18


# ----------------------------------------------------------------------------- scalar

def layernorm_scalar(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    for r in range(rows):
        var xr = x.unsafe_offset(r * cols)
        var yr = y.unsafe_offset(r * cols)
        var s: Float32 = 0
        for j in range(cols):                        # pass 1: a first mean
            s += xr[unsafe_offset=j]
        var mean = s / Float32(cols)
        var sd: Float32 = 0
        var ss: Float32 = 0
        for j in range(cols):                        # pass 2: sums of deviations and their squares
            var d = xr[unsafe_offset=j] - mean
            sd += d
            ss += d * d
        var correction = sd / Float32(cols)          # ~0: what pass 1's rounding missed
        mean += correction
        var variance = max(ss / Float32(cols) - correction * correction, 0)
        var rstd = 1 / sqrt(variance + EPS)
        for j in range(cols):                        # pass 3: normalise, scale, shift
            yr[unsafe_offset=j] = (xr[unsafe_offset=j] - mean) * rstd * gamma[unsafe_offset=j] + beta[unsafe_offset=j]


# ----------------------------------------------------------------------------- simd

def row_sum(xr: F32Ptr, cols: Int) -> Float32:
    var s = Vec(0)
    var j = 0
    while j + F32_WIDTH <= cols:
        s += xr.unsafe_load[width=F32_WIDTH](j)
        j += F32_WIDTH
    var total = s.reduce_add()
    while j < cols:                                  # scalar tail
        total += xr[unsafe_offset=j]
        j += 1
    return total


def row_mean_variance(xr: F32Ptr, cols: Int) -> Tuple[Float32, Float32]:
    """The corrected two-pass mean and biased variance of one row (see `scalar`)."""
    var mean = row_sum(xr, cols) / Float32(cols)
    var sd = Vec(0)
    var ss = Vec(0)
    var j = 0
    while j + F32_WIDTH <= cols:
        var d = xr.unsafe_load[width=F32_WIDTH](j) - mean
        sd += d
        ss = d.fma(d, ss)                            # ss += d * d in one rounding
        j += F32_WIDTH
    var total_d = sd.reduce_add()
    var total_dd = ss.reduce_add()
    while j < cols:
        var d = xr[unsafe_offset=j] - mean
        total_d += d
        total_dd += d * d
        j += 1
    var correction = total_d / Float32(cols)
    return (mean + correction, max(total_dd / Float32(cols) - correction * correction, 0))


def write_normalised(xr: F32Ptr, gamma: F32Ptr, beta: F32Ptr, yr: F32Ptr, cols: Int, mean: Float32, rstd: Float32):
    var j = 0
    while j + F32_WIDTH <= cols:
        var xhat = (xr.unsafe_load[width=F32_WIDTH](j) - mean) * rstd
        yr.unsafe_store[width=F32_WIDTH](
            j, xhat.fma(gamma.unsafe_load[width=F32_WIDTH](j), beta.unsafe_load[width=F32_WIDTH](j)))
        j += F32_WIDTH
    while j < cols:
        yr[unsafe_offset=j] = (xr[unsafe_offset=j] - mean) * rstd * gamma[unsafe_offset=j] + beta[unsafe_offset=j]
        j += 1


def two_pass_rows(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var stats = row_mean_variance(xr, cols)
        var rstd = 1 / sqrt(stats[1] + EPS)
        write_normalised(xr, gamma, beta, y.unsafe_offset(r * cols), cols, stats[0], rstd)


def layernorm_simd(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    two_pass_rows(x, gamma, beta, y, 0, rows, cols)


# ----------------------------------------------------------------------------- parallel

comptime RowRange = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int) thin -> None


def split_rows[rows_fn: RowRange](x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    """Run rows_fn on contiguous blocks of rows, one block per worker thread."""
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        rows_fn(x, gamma, beta, y, 0, rows, cols)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            rows_fn(x, gamma, beta, y, first, last, cols)

    parallelize(work, workers)


def layernorm_parallel(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    split_rows[two_pass_rows](x, gamma, beta, y, rows, cols)


# ----------------------------------------------------------------------------- fused

def welford_mean_variance(xr: F32Ptr, cols: Int) -> Tuple[Float32, Float32]:
    """Mean and biased variance of a row in one pass.

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
        var v = xr.unsafe_load[width=WELFORD_LANES](j)
        k += 1
        var d = v - mean
        mean += d * (1 / Float32(k))
        m2 = d.fma(v - mean, m2)
        j += WELFORD_LANES
    # Merge the lanes one by one into a running result (count, mean, m2). Rows shorter
    # than WELFORD_LANES have k = 0 and go straight to the tail.
    var total_n = Float32(k)
    var total_mean = mean[0]
    var total_m2 = m2[0]
    if k > 0:
        for lane in range(1, WELFORD_LANES):
            var d = mean[lane] - total_mean
            var merged = total_n + Float32(k)
            total_mean += d * (Float32(k) / merged)
            total_m2 += m2[lane] + d * d * (total_n * Float32(k) / merged)
            total_n = merged
    # The scalar tail: Welford one value at a time, continuing the merged result.
    while j < cols:
        var v = xr[unsafe_offset=j]
        total_n += 1
        var d = v - total_mean
        total_mean += d / total_n
        total_m2 += d * (v - total_mean)
        j += 1
    return (total_mean, total_m2 / Float32(cols))


def welford_rows(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var stats = welford_mean_variance(xr, cols)
        var rstd = 1 / sqrt(stats[1] + EPS)
        write_normalised(xr, gamma, beta, y.unsafe_offset(r * cols), cols, stats[0], rstd)


def layernorm_fused(x: F32Ptr, gamma: F32Ptr, beta: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    split_rows[welford_rows](x, gamma, beta, y, rows, cols)


@export
def PyInit_layernorm() abi("C") -> PythonObject:
    try:
        var m = new_module("layernorm")
        m.def_function[layernorm_entry[layernorm_scalar]](
            "scalar", docstring="layernorm.scalar(x, gamma, beta, y, rows, cols)")
        m.def_function[layernorm_entry[layernorm_simd]](
            "simd", docstring="layernorm.simd(x, gamma, beta, y, rows, cols)")
        m.def_function[layernorm_entry[layernorm_parallel]](
            "parallel", docstring="layernorm.parallel(x, gamma, beta, y, rows, cols)")
        m.def_function[layernorm_entry[layernorm_fused]](
            "fused", docstring="layernorm.fused(x, gamma, beta, y, rows, cols)")
        return m.finalize()
    except e:
        abort(String("error creating the layernorm module: ", e))
