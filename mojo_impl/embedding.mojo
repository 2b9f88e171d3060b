# embedding: GPT-2's token and position embeddings, from int64 token ids idx (batch, time),
# the token table wte (vocab, channels) and the position table wpe (time, channels):
#
#     out[b, t, :] = wte[idx[b, t], :] + wpe[t, :]
#
# and its backward, a scatter-add of the upstream gradient dout (batch, time, channels):
#
#     dwte[v, :] = sum over (b, t) with idx[b, t] = v of dout[b, t, :]
#     dwpe[t, :] = sum over b of dout[b, t, :]
#
# The forward is a gather: one add per element, two row reads and one row write per
# position, memory-bound like add. The backward's lesson is the scatter: many positions
# may hold the same token, so several positions add into one row of dwte, and whoever
# adds must not race with anyone else adding into that row.
#
# Variants (naive first), each registered as embedding_<variant>:
#   scalar     one output element per loop step: for each position, look up its token,
#              then out[c] = wte[tok, c] + wpe[t, c] channel by channel.
#   simd       a row of channels at a time, F32_WIDTH lanes per load/add/store; the last
#              channels % width elements are one masked vector (129 channels: 8 full
#              vectors and a one-lane mask with AVX-512), so an odd row needs no scalar loop.
#   parallel   simd with the positions (batch x time rows of out) split over the worker
#              threads: every worker writes only its own rows of out, so nothing is shared.
#
# Backward variants, each registered as embedding_backward_<variant>:
#   scalar     zero dwte and dwpe, then one position at a time, in (b, t) order, add its
#              dout row into its token's row of dwte and its position's row of dwpe,
#              one channel at a time. The order of the additions into each row is fixed,
#              so the result is the same bits on every run.
#   simd       the same order of additions, a row of channels at a time (masked tail):
#              the same bits as scalar, since each lane's sum sees the same terms in the
#              same order (vector adds are lane-wise, nothing is reassociated).
#   parallel   simd with the CHANNELS split over the worker threads: each worker walks
#              every position in the same (b, t) order but adds only its own slice of
#              channels, [c0, c1), into every row. Deterministic because no two workers
#              ever write the same element (the slices are disjoint), and each element's
#              sum has exactly the terms, in exactly the order, of the one-thread run: the
#              same bits as scalar, however many workers. Splitting the positions instead
#              would let two workers add into the row of a token they both read (a race,
#              or atomics and a run-to-run order); splitting the vocabulary rows would
#              make every worker scan every idx for its own tokens, and the tokens of a
#              real text are far from uniform (one worker would own ' ', 'e' and 't').
#              Slices are whole multiples of 16 floats (64 bytes, a cache line), so when
#              the rows start on a line (channels a multiple of 16, as GPT's 768) two
#              workers never write the same cache line either (no false sharing); with
#              odd channels only the one line at each slice boundary is shared.
#
# A token id outside [0, vocab) would be a read (or write) out of bounds. The harness
# refuses such ids before a bound case runs, but the op layer checks only shapes, so every
# variant checks each id too (one comparison per position): the forward writes that
# position's row as NaN, the backward adds NaN into the position's row of dwpe, instead of
# touching memory it does not own. A wrong id is loud, never a crash or a quiet value.
#
# How Python calls them: embedding_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/embedding.py): idx, wte, wpe, out |
# batch, time, channels, vocab, and dout, idx, wte, dwte, dwpe | batch, time, channels,
# vocab for the backward (wte is there only for its shape; the backward never reads it).
# `out` is a Mojo keyword, so the kernels call that tensor y.

from std.math import iota
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.sys.intrinsics import masked_load, masked_store
from std.utils.numerics import nan
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, I64Ptr, add_variant, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, ~0.2 ms of memory traffic, or the call stays on one thread.
comptime MIN_PER_WORKER = 1 << 18
# The backward's channel slices are multiples of this many floats: one 64-byte line.
comptime LINE = 16


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes: the row's last, partial vector."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(count)))


def token_of(idx: I64Ptr, p: Int, vocab: Int) -> Int:
    """Position p's token id, or -1 when it is outside [0, vocab)."""
    var tok = Int(idx[unsafe_offset=p])
    return tok if 0 <= tok < vocab else -1


def workers_for(elements: Int, most: Int) -> Int:
    return max(1, min(parallelism_level(), most, elements // MIN_PER_WORKER))


# ----------------------------------------------------------------------------- scalar

def embedding_scalar(idx: I64Ptr, wte: F32Ptr, wpe: F32Ptr, y: F32Ptr,
                     batch: Int, time: Int, channels: Int, vocab: Int):
    for b in range(batch):
        for t in range(time):
            var p = b * time + t
            var tok = token_of(idx, p, vocab)
            for c in range(channels):
                if tok < 0:
                    y[unsafe_offset=p * channels + c] = nan[DType.float32]()
                else:
                    y[unsafe_offset=p * channels + c] = (wte[unsafe_offset=tok * channels + c]
                                                           + wpe[unsafe_offset=t * channels + c])


# ----------------------------------------------------------------------------- simd

def embed_rows(idx: I64Ptr, wte: F32Ptr, wpe: F32Ptr, y: F32Ptr,
               first: Int, last: Int, time: Int, channels: Int, vocab: Int):
    """Rows first..last-1 of out (positions p = b * time + t), a vector of channels at a time."""
    var full = channels - channels % F32_WIDTH
    var tail = first_lanes(channels - full)
    for p in range(first, last):
        var tok = token_of(idx, p, vocab)
        var o = y.unsafe_offset(p * channels)
        if tok < 0:
            for c in range(channels):
                o[unsafe_offset=c] = nan[DType.float32]()
            continue
        var e = wte.unsafe_offset(tok * channels)
        var w = wpe.unsafe_offset((p % time) * channels)
        var c = 0
        while c < full:
            o.unsafe_store[width=F32_WIDTH](c, e.unsafe_load[width=F32_WIDTH](c) + w.unsafe_load[width=F32_WIDTH](c))
            c += F32_WIDTH
        if full < channels:
            # Lanes past the row are neither read (masked_load gives 0 there) nor written.
            var ev = masked_load[F32_WIDTH](e.unsafe_offset(full), tail, Vec(0))
            var wv = masked_load[F32_WIDTH](w.unsafe_offset(full), tail, Vec(0))
            masked_store[F32_WIDTH](ev + wv, o.unsafe_offset(full), tail)


def embedding_simd(idx: I64Ptr, wte: F32Ptr, wpe: F32Ptr, y: F32Ptr,
                   batch: Int, time: Int, channels: Int, vocab: Int):
    embed_rows(idx, wte, wpe, y, 0, batch * time, time, channels, vocab)


# ----------------------------------------------------------------------------- parallel

def embedding_parallel(idx: I64Ptr, wte: F32Ptr, wpe: F32Ptr, y: F32Ptr,
                       batch: Int, time: Int, channels: Int, vocab: Int):
    var rows = batch * time
    var workers = workers_for(rows * channels, rows)
    if workers <= 1:
        embed_rows(idx, wte, wpe, y, 0, rows, time, channels, vocab)
        return
    var per_worker = (rows + workers - 1) // workers

    def work(w: Int) {var}:
        var first = w * per_worker
        var last = min(rows, first + per_worker)
        if first < last:
            embed_rows(idx, wte, wpe, y, first, last, time, channels, vocab)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- backward

def zero_rows(x: F32Ptr, count: Int):
    var full = count - count % F32_WIDTH
    var i = 0
    while i < full:
        x.unsafe_store[width=F32_WIDTH](i, Vec(0))
        i += F32_WIDTH
    while i < count:
        x[unsafe_offset=i] = 0
        i += 1


def embedding_backward_scalar(dout: F32Ptr, idx: I64Ptr, wte: F32Ptr, dwte: F32Ptr, dwpe: F32Ptr,
                              batch: Int, time: Int, channels: Int, vocab: Int):
    # The outputs arrive poisoned (NaN) and are sums: zero them first.
    for i in range(vocab * channels):
        dwte[unsafe_offset=i] = 0
    for i in range(time * channels):
        dwpe[unsafe_offset=i] = 0
    for b in range(batch):
        for t in range(time):
            var p = b * time + t
            var tok = token_of(idx, p, vocab)
            for c in range(channels):
                var g = dout[unsafe_offset=p * channels + c]
                if tok < 0:
                    dwpe[unsafe_offset=t * channels + c] += nan[DType.float32]()
                else:
                    dwte[unsafe_offset=tok * channels + c] += g
                    dwpe[unsafe_offset=t * channels + c] += g


def scatter_slice(dout: F32Ptr, idx: I64Ptr, dwte: F32Ptr, dwpe: F32Ptr,
                  batch: Int, time: Int, channels: Int, vocab: Int, c0: Int, c1: Int):
    """Channels c0..c1-1 of dwte and dwpe (zeroed here first): every position in (b, t)
    order adds that slice of its dout row into its token's and its position's rows."""
    var width = c1 - c0
    var full = width - width % F32_WIDTH
    var tail = first_lanes(width - full)
    for v in range(vocab):
        zero_rows(dwte.unsafe_offset(v * channels + c0), width)
    for t in range(time):
        zero_rows(dwpe.unsafe_offset(t * channels + c0), width)
    for b in range(batch):
        for t in range(time):
            var p = b * time + t
            var tok = token_of(idx, p, vocab)
            var g = dout.unsafe_offset(p * channels + c0)
            var w = dwpe.unsafe_offset(t * channels + c0)
            if tok < 0:
                for c in range(width):
                    w[unsafe_offset=c] += nan[DType.float32]()
                continue
            var e = dwte.unsafe_offset(tok * channels + c0)
            var c = 0
            while c < full:
                var gv = g.unsafe_load[width=F32_WIDTH](c)
                e.unsafe_store[width=F32_WIDTH](c, e.unsafe_load[width=F32_WIDTH](c) + gv)
                w.unsafe_store[width=F32_WIDTH](c, w.unsafe_load[width=F32_WIDTH](c) + gv)
                c += F32_WIDTH
            if full < width:
                var gv = masked_load[F32_WIDTH](g.unsafe_offset(full), tail, Vec(0))
                var ev = masked_load[F32_WIDTH](e.unsafe_offset(full), tail, Vec(0))
                var wv = masked_load[F32_WIDTH](w.unsafe_offset(full), tail, Vec(0))
                masked_store[F32_WIDTH](ev + gv, e.unsafe_offset(full), tail)
                masked_store[F32_WIDTH](wv + gv, w.unsafe_offset(full), tail)


def embedding_backward_simd(dout: F32Ptr, idx: I64Ptr, wte: F32Ptr, dwte: F32Ptr, dwpe: F32Ptr,
                            batch: Int, time: Int, channels: Int, vocab: Int):
    scatter_slice(dout, idx, dwte, dwpe, batch, time, channels, vocab, 0, channels)


def embedding_backward_parallel(dout: F32Ptr, idx: I64Ptr, wte: F32Ptr, dwte: F32Ptr, dwpe: F32Ptr,
                                batch: Int, time: Int, channels: Int, vocab: Int):
    var lines = (channels + LINE - 1) // LINE
    var workers = workers_for(batch * time * channels, lines)
    if workers <= 1:
        scatter_slice(dout, idx, dwte, dwpe, batch, time, channels, vocab, 0, channels)
        return
    var lines_per_worker = (lines + workers - 1) // workers

    def work(w: Int) {var}:
        var c0 = w * lines_per_worker * LINE
        var c1 = min(channels, c0 + lines_per_worker * LINE)
        if c0 < c1:
            scatter_slice(dout, idx, dwte, dwpe, batch, time, channels, vocab, c0, c1)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime EmbeddingKernel = def(I64Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Int) thin -> None


def embedding_call[kernel: EmbeddingKernel](args: Args) raises:
    args.expect(8)                                   # idx, wte, wpe, out | batch, time, channels, vocab
    kernel(args.i64(0), args.f32(1), args.f32(2), args.f32(3), args.int(4), args.int(5), args.int(6), args.int(7))


comptime EmbeddingBackwardKernel = def(F32Ptr, I64Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Int) thin -> None


def embedding_backward_call[kernel: EmbeddingBackwardKernel](args: Args) raises:
    args.expect(9)                                   # dout, idx, wte, dwte, dwpe | batch, time, channels, vocab
    kernel(args.f32(0), args.i64(1), args.f32(2), args.f32(3), args.f32(4),
           args.int(5), args.int(6), args.int(7), args.int(8))


@export
def PyInit_embedding() abi("C") -> PythonObject:
    try:
        var m = new_module("embedding")
        add_variant[embedding_call[embedding_scalar]](m, "embedding_scalar")
        add_variant[embedding_call[embedding_simd]](m, "embedding_simd")
        add_variant[embedding_call[embedding_parallel]](m, "embedding_parallel")
        add_variant[embedding_backward_call[embedding_backward_scalar]](m, "embedding_backward_scalar")
        add_variant[embedding_backward_call[embedding_backward_simd]](m, "embedding_backward_simd")
        add_variant[embedding_backward_call[embedding_backward_parallel]](m, "embedding_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the embedding module: ", e))
