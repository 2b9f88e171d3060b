# cross_entropy: softmax and the negative log-likelihood fused, from logits (batch,
# classes) and int64 labels (batch,):
#
#     losses[r] = log(sum_j exp(x[r, j] - m_r)) + (m_r - x[r, label_r]),   m_r = max_j x[r, j]
#     loss      = mean_r losses[r]
#
# and its backward, the gradient of the mean loss:
#
#     dlogits[r, j] = (softmax(x)[r, j] - [j == label_r]) / batch
#
# The order of the operations is the lesson. exp only ever sees x - m <= 0, so nothing
# overflows, even for logits of 1e4. And the loss is log(s) + (m - x[label]), never
# (m + log(s)) - x[label]: m - x[label] is exact when the two are within 2x of each other
# (Sterbenz) and log(s) is at most log(classes), while m + log(s) rounds at the size of
# m, 5e-4 for logits near 1e4, on a loss that may be 1e-3 (the NumPy idiom does that).
#
# Variants (naive first), each registered as cross_entropy_<variant>:
#   scalar    per row, one element at a time: the max, the sum of exp(x - m), the loss;
#             then the mean of the losses.
#   simd      the same two passes, F32_WIDTH lanes at a time. The row's last cols % width
#             logits are one masked vector loaded with -inf in the lanes past the row:
#             -inf never wins the max and exp(-inf - m) is exactly 0 in the sum, so the
#             tail needs no scalar loop (a 10-class row is ONE masked vector).
#   parallel  simd with the rows split over the worker threads; the mean is taken after,
#             by the calling thread, in row order.
#   adaptive  parallel, except that rows shorter than F32_WIDTH are laid out the other
#             way: F32_WIDTH ROWS at a time, one row per lane, column j of all of them
#             fetched with one gather. A 10-class row in one masked vector (simd) spends
#             its time on horizontal reductions across 16 lanes (max, then sum, each
#             log2(16) shuffle steps) for 10 useful values, and is slower than the scalar
#             loop (measured: 5.8 us against 3.3 for 64 x 10); with rows in lanes the max,
#             the exps and the sum are lane-wise, one vector log serves 16 rows, and
#             nothing is reduced across lanes at all.
#
# Backward variants, each registered as cross_entropy_backward_<variant>:
#   scalar    per row: max, sum, then (exp(x - m) / s - onehot) / batch per element.
#   simd      softmax's fused pattern: the exp pass writes exp(x - m) into dlogits while
#             summing it, the last pass scales it in place (one exp per element), and
#             the label's element is corrected afterwards: (p - 1) / batch.
#   parallel  simd with the rows split over the worker threads.
#   adaptive  parallel, with rows shorter than F32_WIDTH done F32_WIDTH rows at a time,
#             one per lane (gathers in, scatters out), as in the forward.
#
# A label outside [0, classes) would be a read out of bounds. The harness refuses such
# labels before a bound case runs, but the op layer checks only shapes, so every variant
# checks each label too (one comparison per row) and makes that row NaN instead of
# reading memory it does not own: a wrong label is loud, never a crash or a quiet value.
#
# How Python calls them: cross_entropy_<variant>(block), one argument block
# (python_entry.mojo) whose slots follow the declaration (harness/primitives/cross_entropy.py):
# logits, labels, losses, loss | batch, classes, and logits, labels, dlogits | batch,
# classes for the backward. `loss` is a 0-d tensor: the address of one float.

from std.math import exp, iota, log
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.sys.intrinsics import masked_load, masked_store
from std.utils.numerics import nan, neg_inf
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, I64Ptr, add_variant, exp_or_zero, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# logits, ~0.2 ms of work (an exp each), or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes: the row's last, partial vector."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(count)))


def label_of(labels: I64Ptr, r: Int, classes: Int) -> Int:
    """Row r's label, or -1 when it is outside [0, classes)."""
    var label = Int(labels[unsafe_offset=r])
    return label if 0 <= label < classes else -1


def mean_of(losses: F32Ptr, batch: Int) -> Float32:
    """The mean loss, summed in float64. Every loss is >= 0, so nothing cancels and a
    float32 running sum's rounding piles up in one direction: 1031 losses of 6.24 (a
    constant row of 513 classes) summed left to right in float32 come out 5e-6 low,
    more than the declared tolerance. One float64 add per row is free next to the exps."""
    var s: Float64 = 0
    for r in range(batch):
        s += Float64(losses[unsafe_offset=r])
    return Float32(s / Float64(batch))


# ----------------------------------------------------------------------------- scalar

def cross_entropy_scalar(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, loss: F32Ptr, batch: Int, classes: Int):
    for r in range(batch):
        var xr = logits.unsafe_offset(r * classes)
        var label = label_of(labels, r, classes)
        if label < 0:
            losses[unsafe_offset=r] = nan[DType.float32]()
            continue
        var m = xr[unsafe_offset=0]
        for j in range(1, classes):                   # pass 1: the max
            m = max(m, xr[unsafe_offset=j])
        var s: Float32 = 0
        for j in range(classes):                      # pass 2: the sum of exp(x - m) <= classes
            s += exp(xr[unsafe_offset=j] - m)
        losses[unsafe_offset=r] = log(s) + (m - xr[unsafe_offset=label])
    loss[unsafe_offset=0] = mean_of(losses, batch)


# ----------------------------------------------------------------------------- simd

def row_max_sum(xr: F32Ptr, classes: Int) -> Tuple[Float32, Float32]:
    """The row's max m and sum of exp(x - m): two vector passes, the tail one masked vector."""
    var full = classes - classes % F32_WIDTH
    var tail = first_lanes(classes - full)
    var x_tail = masked_load[F32_WIDTH](xr.unsafe_offset(full), tail, Vec(neg_inf[DType.float32]()))
    var mv = x_tail
    var j = 0
    while j < full:
        mv = max(mv, xr.unsafe_load[width=F32_WIDTH](j))
        j += F32_WIDTH
    var m = mv.reduce_max()
    var sv = exp_or_zero(x_tail - m)                  # lanes past the row: -inf gives exactly 0
    j = 0
    while j < full:
        sv += exp_or_zero(xr.unsafe_load[width=F32_WIDTH](j) - m)
        j += F32_WIDTH
    return (m, sv.reduce_add())


def loss_rows(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, first: Int, last: Int, classes: Int):
    for r in range(first, last):
        var xr = logits.unsafe_offset(r * classes)
        var label = label_of(labels, r, classes)
        if label < 0:
            losses[unsafe_offset=r] = nan[DType.float32]()
            continue
        var stats = row_max_sum(xr, classes)
        losses[unsafe_offset=r] = log(stats[1]) + (stats[0] - xr[unsafe_offset=label])


def cross_entropy_simd(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, loss: F32Ptr, batch: Int, classes: Int):
    loss_rows(logits, labels, losses, 0, batch, classes)
    loss[unsafe_offset=0] = mean_of(losses, batch)


def cross_entropy_parallel(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, loss: F32Ptr, batch: Int, classes: Int):
    var workers = min(parallelism_level(), batch, max(1, batch * classes // MIN_PER_WORKER))
    if workers <= 1:
        loss_rows(logits, labels, losses, 0, batch, classes)
    else:
        var per_worker = (batch + workers - 1) // workers

        def work(w: Int) {var}:
            var first = w * per_worker
            var last = min(batch, first + per_worker)
            if first < last:
                loss_rows(logits, labels, losses, first, last, classes)

        parallelize(work, workers)
    loss[unsafe_offset=0] = mean_of(losses, batch)


# ----------------------------------------------------------------------------- backward

def nan_row(dr: F32Ptr, classes: Int):
    for j in range(classes):
        dr[unsafe_offset=j] = nan[DType.float32]()


def cross_entropy_backward_scalar(logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, batch: Int, classes: Int):
    var inv_batch = 1 / Float32(batch)
    for r in range(batch):
        var xr = logits.unsafe_offset(r * classes)
        var dr = dlogits.unsafe_offset(r * classes)
        var label = label_of(labels, r, classes)
        if label < 0:
            nan_row(dr, classes)
            continue
        var m = xr[unsafe_offset=0]
        for j in range(1, classes):
            m = max(m, xr[unsafe_offset=j])
        var s: Float32 = 0
        for j in range(classes):
            s += exp(xr[unsafe_offset=j] - m)
        var inv = 1 / s
        for j in range(classes):
            var p = exp(xr[unsafe_offset=j] - m) * inv
            dr[unsafe_offset=j] = ((p - 1) if j == label else p) * inv_batch


def gradient_rows(logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, first: Int, last: Int, batch: Int, classes: Int):
    var inv_batch = 1 / Float32(batch)
    var full = classes - classes % F32_WIDTH
    var tail = first_lanes(classes - full)
    for r in range(first, last):
        var xr = logits.unsafe_offset(r * classes)
        var dr = dlogits.unsafe_offset(r * classes)
        var label = label_of(labels, r, classes)
        if label < 0:
            nan_row(dr, classes)
            continue
        var x_tail = masked_load[F32_WIDTH](xr.unsafe_offset(full), tail, Vec(neg_inf[DType.float32]()))
        var mv = x_tail
        var j = 0
        while j < full:                              # pass 1: the max
            mv = max(mv, xr.unsafe_load[width=F32_WIDTH](j))
            j += F32_WIDTH
        var m = mv.reduce_max()
        var e_tail = exp_or_zero(x_tail - m)         # pass 2: dlogits = exp(x - m), summed
        var sv = e_tail
        j = 0
        while j < full:
            var e = exp_or_zero(xr.unsafe_load[width=F32_WIDTH](j) - m)
            dr.unsafe_store[width=F32_WIDTH](j, e)
            sv += e
            j += F32_WIDTH
        var inv = 1 / sv.reduce_add()
        var scale = Vec(inv * inv_batch)             # pass 3: scale in place, in cache
        j = 0
        while j < full:
            dr.unsafe_store[width=F32_WIDTH](j, dr.unsafe_load[width=F32_WIDTH](j) * scale)
            j += F32_WIDTH
        if full < classes:
            masked_store[F32_WIDTH](e_tail * scale, dr.unsafe_offset(full), tail)
        # The label's element: (p - 1) / batch, from its exp (recomputed: one exp per row).
        dr[unsafe_offset=label] = (exp_or_zero(xr[unsafe_offset=label] - m) * inv - 1) * inv_batch


def cross_entropy_backward_simd(logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, batch: Int, classes: Int):
    gradient_rows(logits, labels, dlogits, 0, batch, batch, classes)


def cross_entropy_backward_parallel(logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, batch: Int, classes: Int):
    var workers = min(parallelism_level(), batch, max(1, batch * classes // MIN_PER_WORKER))
    if workers <= 1:
        gradient_rows(logits, labels, dlogits, 0, batch, batch, classes)
        return
    var per_worker = (batch + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(batch, first + per_worker)
        if first < last:
            gradient_rows(logits, labels, dlogits, first, last, batch, classes)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- adaptive

comptime Lanes = SIMD[DType.int32, F32_WIDTH]
comptime Labels = SIMD[DType.int64, F32_WIDTH]


@fieldwise_init
struct LaneRows(Copyable, ImplicitlyCopyable, Movable):
    """F32_WIDTH consecutive rows of a narrow matrix, one per lane: where each lane's row
    starts (relative to the block's first row), which lanes hold a row, and the labels."""

    var offset: Lanes                    # lane * classes
    var valid: SIMD[DType.bool, F32_WIDTH]
    var label_ok: SIMD[DType.bool, F32_WIDTH]
    var label: Lanes                     # 0 where not label_ok
    var max: Vec
    var sum: Vec


def lane_rows(xb: F32Ptr, labels: I64Ptr, r0: Int, rows: Int, classes: Int) -> LaneRows:
    """Rows r0..r0+rows-1 (rows <= F32_WIDTH) in lanes: their max and sum of exp(x - max),
    each a lane-wise loop over the columns with one gather per column."""
    var lane = iota[DType.int32, F32_WIDTH]()
    var valid = lane.lt(Lanes(Int32(rows)))
    var offset = lane * Int32(classes)
    var m = Vec(neg_inf[DType.float32]())
    for j in range(classes):                         # pass 1: each lane's max
        m = max(m, xb.unsafe_gather[width=F32_WIDTH](offset + Int32(j), valid, Vec(0)))
    var s = Vec(0)
    for j in range(classes):                         # pass 2: each lane's sum
        s += exp_or_zero(xb.unsafe_gather[width=F32_WIDTH](offset + Int32(j), valid, Vec(0)) - m)
    var lab = masked_load[F32_WIDTH](labels.unsafe_offset(r0), valid, Labels(0))
    var ok = valid & lab.ge(Labels(0)) & lab.lt(Labels(Int64(classes)))
    return LaneRows(offset, valid, ok, ok.select(lab, Labels(0)).cast[DType.int32](), m, s)


def loss_rows_adaptive(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, first: Int, last: Int, classes: Int):
    if classes >= F32_WIDTH:
        loss_rows(logits, labels, losses, first, last, classes)
        return
    for r0 in range(first, last, F32_WIDTH):
        var xb = logits.unsafe_offset(r0 * classes)
        var b = lane_rows(xb, labels, r0, min(F32_WIDTH, last - r0), classes)
        var picked = xb.unsafe_gather[width=F32_WIDTH](b.offset + b.label, b.label_ok, Vec(0))
        var loss = b.label_ok.select(log(b.sum) + (b.max - picked), Vec(nan[DType.float32]()))
        masked_store[F32_WIDTH](loss, losses.unsafe_offset(r0), b.valid)


def gradient_rows_adaptive(
    logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, first: Int, last: Int, batch: Int, classes: Int
):
    if classes >= F32_WIDTH:
        gradient_rows(logits, labels, dlogits, first, last, batch, classes)
        return
    var inv_batch = Vec(1 / Float32(batch))
    for r0 in range(first, last, F32_WIDTH):
        var xb = logits.unsafe_offset(r0 * classes)
        var db = dlogits.unsafe_offset(r0 * classes)
        var b = lane_rows(xb, labels, r0, min(F32_WIDTH, last - r0), classes)
        var inv = 1 / b.sum
        var bad = b.valid & ~b.label_ok
        for j in range(classes):                     # pass 3: (p - onehot) / batch, scattered back
            var p = exp_or_zero(xb.unsafe_gather[width=F32_WIDTH](b.offset + Int32(j), b.valid, Vec(0)) - b.max) * inv
            var g = b.label.eq(Lanes(Int32(j))).select(p - 1, p) * inv_batch
            db.unsafe_scatter[width=F32_WIDTH](b.offset + Int32(j), bad.select(Vec(nan[DType.float32]()), g), b.valid)


def cross_entropy_adaptive(logits: F32Ptr, labels: I64Ptr, losses: F32Ptr, loss: F32Ptr, batch: Int, classes: Int):
    var workers = min(parallelism_level(), batch, max(1, batch * classes // MIN_PER_WORKER))
    if workers <= 1:
        loss_rows_adaptive(logits, labels, losses, 0, batch, classes)
    else:
        # Blocks of whole lane groups, so that only the last block has a partial group.
        var per_worker = ((batch + workers - 1) // workers + F32_WIDTH - 1) // F32_WIDTH * F32_WIDTH

        def work(w: Int) {var}:
            var first = w * per_worker
            var last = min(batch, first + per_worker)
            if first < last:
                loss_rows_adaptive(logits, labels, losses, first, last, classes)

        parallelize(work, workers)
    loss[unsafe_offset=0] = mean_of(losses, batch)


def cross_entropy_backward_adaptive(logits: F32Ptr, labels: I64Ptr, dlogits: F32Ptr, batch: Int, classes: Int):
    var workers = min(parallelism_level(), batch, max(1, batch * classes // MIN_PER_WORKER))
    if workers <= 1:
        gradient_rows_adaptive(logits, labels, dlogits, 0, batch, batch, classes)
        return
    var per_worker = ((batch + workers - 1) // workers + F32_WIDTH - 1) // F32_WIDTH * F32_WIDTH

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(batch, first + per_worker)
        if first < last:
            gradient_rows_adaptive(logits, labels, dlogits, first, last, batch, classes)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime CrossEntropyKernel = def(F32Ptr, I64Ptr, F32Ptr, F32Ptr, Int, Int) thin -> None
comptime CrossEntropyBackwardKernel = def(F32Ptr, I64Ptr, F32Ptr, Int, Int) thin -> None


def cross_entropy_call[kernel: CrossEntropyKernel](args: Args) raises:
    args.expect(6)                                   # logits, labels, losses, loss | batch, classes
    kernel(args.f32(0), args.i64(1), args.f32(2), args.f32(3), args.int(4), args.int(5))


def cross_entropy_backward_call[kernel: CrossEntropyBackwardKernel](args: Args) raises:
    args.expect(5)                                   # logits, labels, dlogits | batch, classes
    kernel(args.f32(0), args.i64(1), args.f32(2), args.int(3), args.int(4))


@export
def PyInit_cross_entropy() abi("C") -> PythonObject:
    try:
        var m = new_module("cross_entropy")
        add_variant[cross_entropy_call[cross_entropy_scalar]](m, "cross_entropy_scalar")
        add_variant[cross_entropy_call[cross_entropy_simd]](m, "cross_entropy_simd")
        add_variant[cross_entropy_call[cross_entropy_parallel]](m, "cross_entropy_parallel")
        add_variant[cross_entropy_call[cross_entropy_adaptive]](m, "cross_entropy_adaptive")
        add_variant[cross_entropy_backward_call[cross_entropy_backward_scalar]](m, "cross_entropy_backward_scalar")
        add_variant[cross_entropy_backward_call[cross_entropy_backward_simd]](m, "cross_entropy_backward_simd")
        add_variant[cross_entropy_backward_call[cross_entropy_backward_parallel]](
            m, "cross_entropy_backward_parallel")
        add_variant[cross_entropy_backward_call[cross_entropy_backward_adaptive]](
            m, "cross_entropy_backward_adaptive")
        return m.finalize()
    except e:
        abort(String("error creating the cross_entropy module: ", e))
