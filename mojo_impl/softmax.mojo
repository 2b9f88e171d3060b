# softmax: row-wise over the last axis of a (rows, cols) float32 matrix, numerically stable:
#
#     y[r, j] = exp(x[r, j] - m_r) / sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]
#
# Subtracting the row max changes nothing mathematically but keeps exp() from
# overflowing (x = 1000, or any row offset by 1e4, would give inf otherwise).
#
# And its backward, from the forward's output y and the incoming gradient dy:
#
#     dx[r, j] = y[r, j] * (dy[r, j] - s_r),   s_r = sum_k dy[r, k] * y[r, k]
#
# Variants (naive first), each registered as softmax_<variant>:
#   scalar       three passes per row, one element at a time: max, sum of exp(x - max),
#                normalise. Reads the row three times and computes each exp twice.
#   online_simd  one pass computes the max and the sum together (online softmax,
#                Milakov & Gimelshein 2018), F32_WIDTH lanes at a time: each lane keeps
#                its own running max and sum and rescales its sum by exp(old - new) when
#                its max grows; the lanes merge at the end of the row. A scalar tail takes
#                the last cols % width elements. Then one pass writes the output.
#   parallel     online_simd with the rows split over the worker threads (parallelize[]).
#   fused        parallel, with each row read from memory once and one exp per element:
#                a max pass brings the row into L1, the exp pass writes exp(x - max) into
#                y while summing it, and the last pass scales y in place, still in cache.
#
# What to expect: a 4096-float row is 16 KB and fits in L1, so after the first touch
# every pass over it is cheap and exp() is the real cost. The online pass saves a read
# that the cache already made cheap and pays for it in exps: three per element (the
# rescale, the new term, and again when writing) against one in `fused`, which is why
# `fused` beats `parallel` here (~1.6x at 4096 x 4096). Online softmax pays off where a
# row does not fit in fast memory: very long rows, or a GPU block streaming through
# DRAM (see the CUDA twin).
#
# Backward variants, each registered as softmax_backward_<variant>:
#   scalar     two passes per row, one element at a time: the dot product s = <dy, y>,
#              then dx = y * (dy - s).
#   simd       the same two passes, F32_WIDTH lanes at a time; the dot product keeps
#              per-lane partial sums (with FMA) merged at the end of the row, and the
#              last cols % width elements are one masked vector, not a scalar loop.
#   parallel   simd with the rows split over the worker threads.
#
# The backward does no exp at all: it is two reads of y and dy and one write per
# element, memory-bound like add once vectorised. Its error is the dot product's: each
# dx carries the rounding of s, a sum of `cols` terms (the declaration's error model).
#
# How Python calls them: softmax_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/softmax.py): x, y | rows, cols,
# and y, dy, dx | rows, cols for the backward. softmax_call and softmax_backward_call at
# the bottom read them into the kernels' typed signatures.

from std.math import exp, iota
from std.sys.intrinsics import masked_load, masked_store
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.utils.numerics import neg_inf
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, exp_or_zero, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, ~0.2 ms of work, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18


# ----------------------------------------------------------------------------- scalar

def softmax_scalar(x: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    for r in range(rows):
        var xr = x.unsafe_offset(r * cols)
        var yr = y.unsafe_offset(r * cols)
        var m = xr[unsafe_offset=0]
        for j in range(1, cols):                      # pass 1: the max
            m = max(m, xr[unsafe_offset=j])
        var s: Float32 = 0
        for j in range(cols):                         # pass 2: the normaliser
            s += exp(xr[unsafe_offset=j] - m)
        var inv = 1 / s
        for j in range(cols):                         # pass 3: the output
            yr[unsafe_offset=j] = exp(xr[unsafe_offset=j] - m) * inv


# ----------------------------------------------------------------------------- online_simd

def online_max_sum(xr: F32Ptr, cols: Int) -> Tuple[Float32, Float32]:
    """One pass over a row: its max m and sum of exp(x - m), by the online recurrence."""
    var m = Vec(neg_inf[DType.float32]())            # per lane: running max ...
    var s = Vec(0)                                   # ... and sum of exp(x - running max)
    var j = 0
    while j + F32_WIDTH <= cols:
        var v = xr.unsafe_load[width=F32_WIDTH](j)
        var m_new = max(m, v)
        # Rescale what each lane summed so far to its new max, then add the new terms.
        # A lane that has seen nothing has m = -inf and s = 0: exp_or_zero(-inf) = 0 keeps s = 0.
        s = s * exp_or_zero(m - m_new) + exp_or_zero(v - m_new)
        m = m_new
        j += F32_WIDTH
    # Scalar tail: the last cols % width elements, with the same recurrence.
    var m_tail = neg_inf[DType.float32]()
    var s_tail: Float32 = 0
    while j < cols:
        var v = xr[unsafe_offset=j]
        var m_new = max(m_tail, v)
        s_tail = s_tail * exp_or_zero(m_tail - m_new) + exp_or_zero(v - m_new)
        m_tail = m_new
        j += 1
    # Merge the lanes and the tail: bring every partial sum to the row max.
    var row_max = max(m.reduce_max(), m_tail)
    var row_sum = (s * exp_or_zero(m - row_max)).reduce_add() + s_tail * exp_or_zero(m_tail - row_max)
    return (row_max, row_sum)


def write_normalised(xr: F32Ptr, yr: F32Ptr, cols: Int, row_max: Float32, row_sum: Float32):
    var inv = 1 / row_sum
    var j = 0
    while j + F32_WIDTH <= cols:
        yr.unsafe_store[width=F32_WIDTH](j, exp_or_zero(xr.unsafe_load[width=F32_WIDTH](j) - row_max) * inv)
        j += F32_WIDTH
    while j < cols:
        yr[unsafe_offset=j] = exp_or_zero(xr[unsafe_offset=j] - row_max) * inv
        j += 1


def online_rows(x: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var stats = online_max_sum(xr, cols)
        write_normalised(xr, y.unsafe_offset(r * cols), cols, stats[0], stats[1])


def softmax_online_simd(x: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    online_rows(x, y, 0, rows, cols)


# ----------------------------------------------------------------------------- parallel

comptime RowRange = def(F32Ptr, F32Ptr, Int, Int, Int) thin -> None


def split_rows[rows_fn: RowRange](x: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    """Run rows_fn on contiguous blocks of rows, one block per worker thread."""
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        rows_fn(x, y, 0, rows, cols)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            rows_fn(x, y, first, last, cols)

    parallelize(work, workers)


def softmax_parallel(x: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    split_rows[online_rows](x, y, rows, cols)


# ----------------------------------------------------------------------------- fused

def row_max(xr: F32Ptr, cols: Int) -> Float32:
    var m = Vec(neg_inf[DType.float32]())
    var j = 0
    while j + F32_WIDTH <= cols:
        m = max(m, xr.unsafe_load[width=F32_WIDTH](j))
        j += F32_WIDTH
    var result = m.reduce_max()
    while j < cols:
        result = max(result, xr[unsafe_offset=j])
        j += 1
    return result


def fused_rows(x: F32Ptr, y: F32Ptr, first: Int, last: Int, cols: Int):
    for r in range(first, last):
        var xr = x.unsafe_offset(r * cols)
        var yr = y.unsafe_offset(r * cols)
        var m = row_max(xr, cols)                    # pass 1 reads the row into L1
        var s = Vec(0)                               # pass 2: y = exp(x - m), summed
        var j = 0
        while j + F32_WIDTH <= cols:
            var e = exp_or_zero(xr.unsafe_load[width=F32_WIDTH](j) - m)
            yr.unsafe_store[width=F32_WIDTH](j, e)
            s += e
            j += F32_WIDTH
        var total = s.reduce_add()
        while j < cols:
            var e = exp_or_zero(xr[unsafe_offset=j] - m)
            yr[unsafe_offset=j] = e
            total += e
            j += 1
        var inv = Vec(1 / total)                     # pass 3: scale y where it sits, in cache
        j = 0
        while j + F32_WIDTH <= cols:
            yr.unsafe_store[width=F32_WIDTH](j, yr.unsafe_load[width=F32_WIDTH](j) * inv)
            j += F32_WIDTH
        while j < cols:
            yr[unsafe_offset=j] = yr[unsafe_offset=j] * inv[0]
            j += 1


def softmax_fused(x: F32Ptr, y: F32Ptr, rows: Int, cols: Int):
    split_rows[fused_rows](x, y, rows, cols)


# ----------------------------------------------------------------------------- backward

def softmax_backward_scalar(y: F32Ptr, dy: F32Ptr, dx: F32Ptr, rows: Int, cols: Int):
    for r in range(rows):
        var yr = y.unsafe_offset(r * cols)
        var gr = dy.unsafe_offset(r * cols)
        var xr = dx.unsafe_offset(r * cols)
        var s: Float32 = 0
        for j in range(cols):                         # pass 1: <dy, y>
            s += gr[unsafe_offset=j] * yr[unsafe_offset=j]
        for j in range(cols):                         # pass 2: dx = y * (dy - s)
            xr[unsafe_offset=j] = yr[unsafe_offset=j] * (gr[unsafe_offset=j] - s)


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes: the row's last, partial vector."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(count)))


def backward_rows(y: F32Ptr, dy: F32Ptr, dx: F32Ptr, first: Int, last: Int, cols: Int):
    var full = cols - cols % F32_WIDTH
    var tail = first_lanes(cols - full)
    for r in range(first, last):
        var yr = y.unsafe_offset(r * cols)
        var gr = dy.unsafe_offset(r * cols)
        var xr = dx.unsafe_offset(r * cols)
        var acc = Vec(0)
        var j = 0
        while j < full:
            acc = gr.unsafe_load[width=F32_WIDTH](j).fma(yr.unsafe_load[width=F32_WIDTH](j), acc)
            j += F32_WIDTH
        # The tail as one masked vector: lanes past the row read nothing and add 0.
        var y_tail = masked_load[F32_WIDTH](yr.unsafe_offset(full), tail, Vec(0))
        var g_tail = masked_load[F32_WIDTH](gr.unsafe_offset(full), tail, Vec(0))
        var s = Vec(g_tail.fma(y_tail, acc).reduce_add())
        j = 0
        while j < full:
            xr.unsafe_store[width=F32_WIDTH](
                j, yr.unsafe_load[width=F32_WIDTH](j) * (gr.unsafe_load[width=F32_WIDTH](j) - s))
            j += F32_WIDTH
        if full < cols:
            masked_store[F32_WIDTH](y_tail * (g_tail - s), xr.unsafe_offset(full), tail)


def softmax_backward_simd(y: F32Ptr, dy: F32Ptr, dx: F32Ptr, rows: Int, cols: Int):
    backward_rows(y, dy, dx, 0, rows, cols)


def softmax_backward_parallel(y: F32Ptr, dy: F32Ptr, dx: F32Ptr, rows: Int, cols: Int):
    var workers = min(parallelism_level(), rows, max(1, rows * cols // MIN_PER_WORKER))
    if workers <= 1:
        backward_rows(y, dy, dx, 0, rows, cols)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            backward_rows(y, dy, dx, first, last, cols)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime SoftmaxKernel = def(F32Ptr, F32Ptr, Int, Int) thin -> None


def softmax_call[kernel: SoftmaxKernel](args: Args) raises:
    args.expect(4)                                   # x, y | rows, cols
    kernel(args.f32(0), args.f32(1), args.int(2), args.int(3))


comptime SoftmaxBackwardKernel = def(F32Ptr, F32Ptr, F32Ptr, Int, Int) thin -> None


def softmax_backward_call[kernel: SoftmaxBackwardKernel](args: Args) raises:
    args.expect(5)                                   # y, dy, dx | rows, cols
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3), args.int(4))


@export
def PyInit_softmax() abi("C") -> PythonObject:
    try:
        var m = new_module("softmax")
        add_variant[softmax_call[softmax_scalar]](m, "softmax_scalar")
        add_variant[softmax_call[softmax_online_simd]](m, "softmax_online_simd")
        add_variant[softmax_call[softmax_parallel]](m, "softmax_parallel")
        add_variant[softmax_call[softmax_fused]](m, "softmax_fused")
        add_variant[softmax_backward_call[softmax_backward_scalar]](m, "softmax_backward_scalar")
        add_variant[softmax_backward_call[softmax_backward_simd]](m, "softmax_backward_simd")
        add_variant[softmax_backward_call[softmax_backward_parallel]](m, "softmax_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the softmax module: ", e))
