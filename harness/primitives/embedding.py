"""embedding: GPT-2's token and position embeddings, from int64 token ids (batch, time):

    out[b, t, :] = wte[idx[b, t], :] + wpe[t, :]

wte is the (vocab, channels) token table, wpe the (time, channels) position table: a model
with a longer context passes the first `time` rows of its own table (a view).

Its backward is a scatter-add: every position adds its upstream gradient into the row of the
token it read, and every batch adds into the position's row,

    dwte[v, :] = sum over (b, t) with idx[b, t] = v of dout[b, t, :]
    dwpe[t, :] = sum over b of dout[b, t, :]

Many positions may hold the same token (a character model reads 'e' everywhere), so rows
of dwte collect anywhere from zero to batch * time terms: on a GPU that is the lesson of
atomics (fast, but the order of the additions, and so the last bits, changes from run to
run) against an owner that sums its row in a fixed order (the same bits every run).
"""
import numpy as np

from ..core.declaration import F32_EPS, Backward, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
from . import _common as c

F32 = np.float32
DIMS = ("batch", "time", "channels", "vocab")


def idx_init(shape, rng, dims):
    return rng.integers(0, dims["vocab"], size=shape, dtype=np.int64)


def idx_range(dims):
    return (0, dims["vocab"])


def reference(idx, wte, wpe):
    return wte[idx] + wpe[None, :, :]


def out_error_scale(inputs, refs, scalars):
    """One rounding of a sum of two terms: at the size of the terms, not of the result."""
    wte, wpe = inputs["wte"].astype(np.float64), inputs["wpe"].astype(np.float64)
    return np.abs(wte[inputs["idx"]]) + np.abs(wpe)[None, :, :]


def numpy_embedding(idx, wte, wpe):
    return wte[idx] + wpe


def naive_embedding(idx, wte, wpe):
    return (wte[idx] + wpe).astype(F32)


def position_off_by_one(idx, wte, wpe):
    """Reads the position table one row late (the first row for the last position)."""
    return (wte[idx] + np.roll(wpe, -1, axis=0)).astype(F32)


def token_only(idx, wte, wpe):
    return wte[idx].astype(F32)


def token_off_by_one(idx, wte, wpe):
    return (wte[(idx + 1) % wte.shape[0]] + wpe).astype(F32)


# (batch, time, channels, vocab): one token; a vocabulary larger than what is read (rows of
# dwte that stay zero); odd channels for the vector tails; more positions than tokens (every
# row read many times); GPT-sized rows.
CHECKS = ((1, 1, 1, 1), (1, 3, 5, 7), (3, 17, 33, 65), (2, 129, 127, 3), (4, 64, 129, 1000), (2, 33, 768, 50))
LONG = ((8, 1024, 129, 65),)


def size_to_dims(n):
    """The ladder's n is the number of positions batch x time, at GPT-2 small's 768
    channels and a 65-character vocabulary: (n / 64, 64, 768, 65)."""
    return (max(n // 64, 1), min(n, 64), 768, 65)


LADDER = (64, 256, 1024, 4096, 16384, 65536)
QUICK = (64, 1024, 4096)
GPU = (4096, 16384, 65536, 262144)

EMBEDDING = Primitive(
    steps=(Step("naive", "one output element per loop step (per thread on a GPU)", python="loop", cuda="naive",
                mojo="scalar"),
           Step("vectorized", "a row of channels at a time: SIMD lanes, float4 on a GPU", cuda="vec4", mojo="simd"),),
    name="embedding", summary="token + position embeddings: out[b, t] = wte[idx[b, t]] + wpe[t]", order=90,
    dims=DIMS,
    tensors=(Tensor("idx", ("batch", "time"), dtype="int64", init=idx_init, valid_range=idx_range),
             Tensor("wte", ("vocab", "channels")),
             Tensor("wpe", ("time", "channels")),
             Tensor("out", ("batch", "time", "channels"), role="out", error_scale=out_error_scale,
                    tolerance=Tolerance(atol=0.0, rtol=F32_EPS))),
    reference=reference, numpy=numpy_embedding,
    # bytes: every tensor once (the default). The tables are small and read again and again
    # from cache, so counting a row read per position would put the figure above the copy
    # bandwidth: the minimum traffic is the ids, the two tables and the output.
    flops=lambda d: d["batch"] * d["time"] * d["channels"], flops_note="1 FLOP/element: the add",
    size_to_dims=size_to_dims, ladder=LADDER, quick_ladder=QUICK, gpu_ladder=GPU,
    check_dims=CHECKS, long_check_dims=LONG,
    distributions=("normal", "wide"),
    naive_float32=naive_embedding,
    mutants=(
        Mutant("position_off_by_one", "reads wpe one row late", position_off_by_one, caught_on=("normal",),
               where=lambda d: d["time"] > 1),
        Mutant("token_only", "forgets the position embedding", token_only, caught_on=("normal",)),
        Mutant("token_off_by_one", "reads the next token's row", token_off_by_one, caught_on=("normal",),
               where=lambda d: d["vocab"] > 1),
    ))


# ----------------------------------------------------------------------------- backward

def _scatter(dout, idx, vocab):
    dwte = np.zeros((vocab, dout.shape[-1]), dtype=dout.dtype)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dwte


def embedding_backward_reference(dout, idx, wte):
    """wte is an input only for its shape (the vocabulary size); its values are not read."""
    return {"dwte": _scatter(dout, idx, wte.shape[0]), "dwpe": dout.sum(axis=0)}


def _abs_scale(inputs, refs, scalars):
    d = np.abs(inputs["dout"].astype(np.float64))
    return _scatter(d, inputs["idx"], inputs["wte"].shape[0])


def _abs_scale_pos(inputs, refs, scalars):
    return np.abs(inputs["dout"].astype(np.float64)).sum(axis=0)


def numpy_embedding_backward(dout, idx, wte):
    """What a user writes: np.add.at for the scatter (unbuffered, so repeated tokens add up)."""
    dwte = np.zeros_like(wte)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dwte, dout.sum(axis=0)


def buffered_scatter(dout, idx, wte):
    """dwte[idx] += dout: NumPy's buffered fancy-index add keeps only the last write of a
    repeated token, the classic scatter bug."""
    dwte = np.zeros_like(wte)
    dwte[idx.reshape(-1)] += dout.reshape(-1, dout.shape[-1])
    return dwte, dout.sum(axis=0)


def dwpe_over_time(dout, idx, wte):
    dwte, _ = numpy_embedding_backward(dout, idx, wte)
    return dwte, np.broadcast_to(dout.sum(axis=(0, 1)), dout.shape[1:]).astype(F32).copy()


def last_position_dropped(dout, idx, wte):
    d = dout.copy()
    d[:, -1, :] = 0
    return numpy_embedding_backward(d, idx, wte)[0], dout.sum(axis=0)


def _repeats(d):
    """Only a vocabulary smaller than the positions read must repeat a token."""
    return d["vocab"] < d["batch"] * d["time"]


EMBEDDING_BACKWARD = Primitive(
    steps=(Step("naive", "positions in order, each adding its row into its token's row (a thread per channel "
                         "on a GPU)", python="loop", cuda="naive", mojo="scalar"),),
    name="embedding_backward", summary="scatter-add of the upstream gradient into the token and position tables",
    order=91, stem="embedding", forward="embedding",
    backward_of=Backward(saved={"idx": "idx", "wte": "wte"}, upstream={"dout": "out"},
                         grads={"dwte": "wte", "dwpe": "wpe"}),
    dims=DIMS,
    tensors=(Tensor("dout", ("batch", "time", "channels"), init=c.upstream_gradient),
             Tensor("idx", ("batch", "time"), dtype="int64", init=idx_init, valid_range=idx_range),
             Tensor("wte", ("vocab", "channels")),
             Tensor("dwte", ("vocab", "channels"), role="out", error_scale=_abs_scale,
                    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d["batch"] * d["time"]))),
             Tensor("dwpe", ("time", "channels"), role="out", error_scale=_abs_scale_pos,
                    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d["batch"])))),
    reference=embedding_backward_reference, numpy=numpy_embedding_backward,
    flops=lambda d: 2 * d["batch"] * d["time"] * d["channels"], flops_note="2 FLOP/element: two adds",
    bytes=lambda d: 8 * d["batch"] * d["time"] + 4 * (d["batch"] * d["time"] * d["channels"]
                                                       + (d["vocab"] + d["time"]) * d["channels"]),
    size_to_dims=size_to_dims, ladder=LADDER, quick_ladder=QUICK, gpu_ladder=GPU,
    check_dims=CHECKS, long_check_dims=LONG,
    distributions=("normal", "wide"),
    naive_float32=numpy_embedding_backward,
    mutants=(
        Mutant("buffered_scatter", "dwte[idx] += dout: repeated tokens keep only one addition", buffered_scatter,
               caught_on=("normal",), where=_repeats),
        Mutant("dwpe_over_time", "sums the position gradient over time as well as batch", dwpe_over_time,
               caught_on=("normal",), where=lambda d: d["time"] > 1),
        Mutant("last_position_dropped", "a loop over time one short", last_position_dropped,
               caught_on=("normal",)),
    ))

DECLARED = (EMBEDDING, EMBEDDING_BACKWARD)
