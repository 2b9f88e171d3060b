"""attention: causal scaled dot-product self-attention, per batch and head, from q, k, v of
shape (batch, heads, time, head_dim):

    S[i, j] = q[i] . k[j] / sqrt(head_dim)             for j <= i (the future is masked)
    P[i, :] = softmax(S[i, :])
    out[i]  = sum_j P[i, j] v[j]
    lse[i]  = log sum_j exp(S[i, j])                   (the row's log-sum-exp)

lse is an output because the backward needs it: with it, P[i, j] = exp(S[i, j] - lse[i]) can
be recomputed from q and k one tile at a time, so no T x T matrix is ever stored, forward
or backward (FlashAttention's trick). Its backward, with D[i] = dout[i] . out[i]:

    dv[j] = sum_i P[i, j] dout[i]
    dS    = P * (dout v^T - D)                          (the softmax backward, per row)
    dq[i] = sum_j dS[i, j] k[j] / sqrt(head_dim)
    dk[j] = sum_i dS[i, j] q[i] / sqrt(head_dim)

FLOPs count the causal triangle only: 2 FLOP per multiply-add of q.k and of P.v, about
2 * T^2 * head_dim per (batch, head) forward and 2.5x that backward. Bytes are the minimum
traffic: q, k, v, out and lse once; a naive kernel that stores S and P moves 2 x T^2 floats
more per (batch, head), which at T = 1024 is 16x the size of q.
"""
import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
from . import _common as c

F32 = np.float32
DIMS = ("batch", "heads", "time", "head_dim")


def _scores(q, k):
    """Scaled, masked scores of one (batch, head): (T, T) with -inf above the diagonal."""
    t, d = q.shape
    s = (q @ k.T) / np.sqrt(d)
    s[np.triu_indices(t, 1)] = -np.inf
    return s


def _forward(q, k, v):
    """float64 out and lse, one (batch, head) at a time so memory stays at T x T."""
    b, h, t, d = q.shape
    out = np.empty(q.shape)
    lse = np.empty((b, h, t))
    for i in range(b):
        for j in range(h):
            s = _scores(q[i, j], k[i, j])
            m = s.max(axis=-1, keepdims=True)
            e = np.exp(s - m)
            l_ = e.sum(axis=-1, keepdims=True)
            out[i, j] = (e / l_) @ v[i, j]
            lse[i, j] = (m + np.log(l_))[:, 0]
    return out, lse


def reference(q, k, v):
    out, lse = _forward(q, k, v)
    return {"out": out, "lse": lse}


def _abs_terms(inputs):
    """Per (batch, head): P, and e, the bound on the relative error of each P[i, j] that
    the scores' rounding causes. A score off by eps * a[i, j] (a = |q| |k|^T / sqrt(d), the
    size of what its dot product sums) moves P[i, j] by P[i, j] (dS[i, j] - sum_k P[i, k] dS[i, k]),
    at most eps * P[i, j] e[i, j] with e = (1 - P) a + sum_k P a - P a: zero for a row with
    one visible key, whatever its size, since a softmax of one score is 1."""
    q, k = inputs["q"].astype(np.float64), inputs["k"].astype(np.float64)
    b, h, t, d = q.shape
    for i in range(b):
        for j in range(h):
            s = _scores(q[i, j], k[i, j])
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            a = np.tril(np.abs(q[i, j]) @ np.abs(k[i, j]).T) / np.sqrt(d)
            pa = p * a
            e = (1 - p) * a + pa.sum(axis=-1, keepdims=True) - pa
            yield i, j, p, a, e


def out_error_scale(inputs, refs, scalars):
    """P |v| (the P.v sum's own rounding) plus what the scores' rounding does to P: sum_j
    P[i, j] e[i, j] |v[j]|."""
    v = np.abs(inputs["v"].astype(np.float64))
    scale = np.empty(refs["out"].shape)
    for i, j, p, a, e in _abs_terms(inputs):
        scale[i, j] = (p * (1 + e)) @ v[i, j]
    return scale


def lse_error_scale(inputs, refs, scalars):
    """The row max's size and the scores' rounding: 1 + |lse| + sum_j P a."""
    scale = np.empty(refs["lse"].shape)
    for i, j, p, a, e in _abs_terms(inputs):
        scale[i, j] = 1 + np.abs(refs["lse"][i, j]) + (p * a).sum(axis=-1)
    return scale


def numpy_attention(q, k, v):
    """What a user writes: the whole (B, H, T, T) score tensor, masked, softmaxed, times v."""
    t, d = q.shape[-2:]
    s = (q @ np.swapaxes(k, -1, -2)) * F32(1 / np.sqrt(d))
    s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, F32(-np.inf))
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    l_ = e.sum(axis=-1, keepdims=True)
    return (e / l_) @ v, (m + np.log(l_))[..., 0]


def _variant(q, k, v, scale=None, mask_shift=0, subtract_max=True, natural_log=True):
    t, d = q.shape[-2:]
    sc = F32(1 / np.sqrt(d)) if scale is None else F32(scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    keep = np.tril(np.ones((t, t), dtype=bool), mask_shift)
    s = np.where(keep, s, F32(-np.inf))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m = s.max(axis=-1, keepdims=True) if subtract_max else np.zeros(s.shape[:-1] + (1,), F32)
        e = np.exp(s - m)
        l_ = e.sum(axis=-1, keepdims=True)
        lse = (m + (np.log(l_) if natural_log else np.log2(l_)))[..., 0]
        return ((e / l_) @ v).astype(F32), lse.astype(F32)


def _tf32(a):
    """Round float32 to TF32's 10-bit mantissa (what a tensor core does to its inputs)."""
    b = np.ascontiguousarray(a, dtype=F32).view(np.uint32)
    return ((b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(F32)


def _online_without_rescale(q, k, v):
    """The flash loop's classic bug: when a larger score arrives, the running sum and the
    accumulated output are not rescaled by exp(old max - new max)."""
    t, d = q.shape[-2:]
    sc = F32(1 / np.sqrt(d))
    m = np.full(q.shape[:-1], -np.inf, F32)
    l_ = np.zeros(q.shape[:-1], F32)
    acc = np.zeros(q.shape, F32)
    rows = np.arange(t)
    for j in range(t):
        s = (q * k[..., j:j + 1, :]).sum(-1) * sc                    # every query against key j
        live = rows >= j
        m_new = np.where(live, np.maximum(m, s), m)
        e = np.where(live, np.exp(s - m_new), F32(0))
        l_ = l_ + e                                                  # missing: * exp(m - m_new)
        acc = acc + e[..., None] * v[..., j:j + 1, :]
        m = m_new
    return (acc / l_[..., None]).astype(F32), (m + np.log(l_)).astype(F32)


MUTANTS = (
    Mutant("tf32_scores", "q and k rounded to TF32 before the dot products (a tensor core's default)",
           lambda q, k, v: _variant(_tf32(q), _tf32(k), v), caught_on=("normal",),
           where=lambda d: d["time"] > 1 and d["head_dim"] >= 8),
    Mutant("online_without_rescale", "online softmax that forgets to rescale when the max grows",
           _online_without_rescale, caught_on=("normal",), where=lambda d: d["time"] > 2),
    Mutant("no_causal_mask", "attends to the future", lambda q, k, v: _variant(q, k, v, mask_shift=10 ** 9),
           caught_on=("normal",), where=lambda d: d["time"] > 1),
    Mutant("peeks_one_ahead", "the mask one off: each row also sees the next key",
           lambda q, k, v: _variant(q, k, v, mask_shift=1), caught_on=("normal",), where=lambda d: d["time"] > 1),
    Mutant("scale_1_over_d", "scales the scores by 1/d, not 1/sqrt(d)",
           lambda q, k, v: _variant(q, k, v, scale=1 / q.shape[-1]), caught_on=("normal",),
           where=lambda d: d["time"] > 1 and d["head_dim"] > 1),
    Mutant("no_max_subtraction", "exp(S) without the row max: overflows on large scores",
           lambda q, k, v: _variant(q, k, v, subtract_max=False), caught_on=("outliers",),
           where=lambda d: d["head_dim"] > 1),
    Mutant("lse_in_base_2", "lse with log2: the backward's P would be wrong",
           lambda q, k, v: _variant(q, k, v, natural_log=False), caught_on=("normal",),
           where=lambda d: d["time"] > 1),
)


def naive_attention(q, k, v):
    return tuple(a.astype(F32) for a in numpy_attention(q, k, v))


# (batch, heads, time, head_dim): one position; odd T and d (no tile divides them); GPT-2's
# head_dim 64 at a T of two tiles plus one; many heads, short rows; the largest head_dim the
# CUDA flash kernel takes.
CHECKS = ((1, 1, 1, 1), (1, 1, 3, 5), (2, 3, 17, 8), (1, 2, 65, 33), (1, 1, 129, 64), (2, 4, 31, 7),
          (1, 2, 70, 128))
LONG = ((1, 4, 257, 64), (2, 2, 200, 16))


def size_to_dims(n):
    """The ladder's n is the context length T, at batch x heads = 32 and head_dim 64 (the
    issue's comparison point with torch's SDPA is T = 1024)."""
    return (4, 8, n, 64)


LADDER = (64, 128, 256, 512, 1024)
QUICK = (64, 256)
GPU = (256, 512, 1024, 2048, 4096)


def _flops(d):
    pairs = d["time"] * (d["time"] + 1) / 2
    return d["batch"] * d["heads"] * pairs * 4 * d["head_dim"]


def _bytes(d):
    n = d["batch"] * d["heads"] * d["time"]
    return 4 * (4 * n * d["head_dim"] + n)


ATTENTION = Primitive(
    steps=(Step("naive", "the T x T scores materialised, masked, softmaxed, multiplied by V", python="naive",
                cuda="naive", mojo="naive"),
           Step("fused", "flash style: keys and values stream through fast memory with the online softmax; "
                         "the T x T matrix never exists", python="online", cuda="flash", mojo="flash"),),
    name="attention", summary="causal self-attention softmax(q k^T / sqrt(d)) v, with each row's log-sum-exp",
    order=95, dims=DIMS,
    tensors=(Tensor("q", DIMS), Tensor("k", DIMS), Tensor("v", DIMS),
             Tensor("out", DIMS, role="out", error_scale=out_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["time"]) + sum_rtol(d["head_dim"]))),
             Tensor("lse", ("batch", "heads", "time"), role="out", error_scale=lse_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["time"]) + sum_rtol(d["head_dim"])))),
    reference=reference, numpy=numpy_attention,
    flops=_flops, flops_note="the causal triangle: q.k and P.v, 2 FLOP per multiply-add", bytes=_bytes,
    bound="compute",
    size_to_dims=size_to_dims, ladder=LADDER, quick_ladder=QUICK, gpu_ladder=GPU,
    check_dims=CHECKS, long_check_dims=LONG,
    distributions=("normal", "outliers", "constant_rows"),
    naive_float32=naive_attention, mutants=MUTANTS)


# ----------------------------------------------------------------------------- backward

def backward_reference(q, k, v, out, lse, dout):
    b, h, t, d = q.shape
    dq, dk, dv = np.empty(q.shape), np.empty(q.shape), np.empty(q.shape)
    sc = 1 / np.sqrt(d)
    for i in range(b):
        for j in range(h):
            p = np.exp(_scores(q[i, j], k[i, j]) - lse[i, j][:, None])
            dv[i, j] = p.T @ dout[i, j]
            dl = (dout[i, j] * out[i, j]).sum(axis=-1, keepdims=True)
            ds = p * (dout[i, j] @ v[i, j].T - dl)
            dq[i, j] = ds @ k[i, j] * sc
            dk[i, j] = ds.T @ q[i, j] * sc
    return {"dq": dq, "dk": dk, "dv": dv}


def _backward_scales(inputs):
    q, k, v = (inputs[n].astype(np.float64) for n in ("q", "k", "v"))
    do, o = inputs["dout"].astype(np.float64), inputs["out"].astype(np.float64)
    lse = inputs["lse"].astype(np.float64)
    b, h, t, d = q.shape
    sq, sk, sv = np.empty(q.shape), np.empty(q.shape), np.empty(q.shape)
    sc = 1 / np.sqrt(d)
    for i in range(b):
        for j in range(h):
            s = _scores(q[i, j], k[i, j])
            p = np.exp(s - lse[i, j][:, None])
            # The scores' rounding, taken whole: P comes from the saved lse, not from its own
            # row's sum, so no normalisation cancels it (unlike the forward's, see _abs_terms).
            a = np.tril(np.abs(q[i, j]) @ np.abs(k[i, j]).T) * sc
            # |dS| with every term taken in absolute value: the size of what dq and dk sum
            dsa = p * (np.abs(do[i, j]) @ np.abs(v[i, j]).T + np.abs(do[i, j] * o[i, j]).sum(-1, keepdims=True)) \
                * (1 + a)
            sq[i, j] = dsa @ np.abs(k[i, j]) * sc
            sk[i, j] = dsa.T @ np.abs(q[i, j]) * sc
            sv[i, j] = (p * (1 + a)).T @ np.abs(do[i, j])
    return {"dq": sq, "dk": sk, "dv": sv}


def _scale_of(name):
    def scale(inputs, refs, scalars):
        return _backward_scales(inputs)[name]
    scale.__doc__ = (f"the sum that forms {name} taken term by term in absolute value, each P grown by the "
                     f"scores' own rounding")
    return scale


def derive_forward(inputs, dims):
    """out and lse as the forward gives them (float32 of the float64 forward), so that P
    recomputed from lse is a probability distribution, as in training."""
    out, lse = _forward(*(inputs[n].astype(np.float64) for n in ("q", "k", "v")))
    return {"out": out.astype(F32), "lse": lse.astype(F32)}


def numpy_attention_backward(q, k, v, out, lse, dout):
    t, d = q.shape[-2:]
    sc = F32(1 / np.sqrt(d))
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, F32(-np.inf))
    p = np.exp(s - lse[..., None])
    dv = np.swapaxes(p, -1, -2) @ dout
    dl = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (dout @ np.swapaxes(v, -1, -2) - dl)
    return ds @ k * sc, np.swapaxes(ds, -1, -2) @ q * sc, dv


def _no_dl(q, k, v, out, lse, dout):
    return numpy_attention_backward(q, k, v, np.zeros_like(out), lse, dout)


def _dk_unscaled(q, k, v, out, lse, dout):
    dq, dk, dv = numpy_attention_backward(q, k, v, out, lse, dout)
    return dq, dk * F32(np.sqrt(q.shape[-1])), dv


def _p_unmasked(q, k, v, out, lse, dout):
    t, d = q.shape[-2:]
    sc = F32(1 / np.sqrt(d))
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp((q @ np.swapaxes(k, -1, -2)) * sc - lse[..., None])
        dv = np.swapaxes(p, -1, -2) @ dout
        dl = (dout * out).sum(axis=-1, keepdims=True)
        ds = p * (dout @ np.swapaxes(v, -1, -2) - dl)
        return (ds @ k * sc).astype(F32), (np.swapaxes(ds, -1, -2) @ q * sc).astype(F32), dv.astype(F32)


BACKWARD_MUTANTS = (
    Mutant("no_rowsum_term", "dS = P * dP, without subtracting D = dout . out", _no_dl,
           caught_on=("normal",), where=lambda d: d["time"] > 1),
    Mutant("dk_unscaled", "forgets the 1/sqrt(d) in dk", _dk_unscaled, caught_on=("normal",),
           where=lambda d: d["head_dim"] > 1 and d["time"] > 1),
    Mutant("p_unmasked", "recomputes P without the causal mask", _p_unmasked, caught_on=("normal",),
           where=lambda d: d["time"] > 1),
)

ATTENTION_BACKWARD = Primitive(
    steps=(Step("naive", "P recomputed and stored as a T x T matrix, then the products one by one",
                python="naive", cuda="naive", mojo="naive"),
           Step("fused", "P recomputed tile by tile from the saved lse; the T x T matrix never exists",
                python="recompute", cuda="flash", mojo="flash"),),
    name="attention_backward", summary="gradients of causal attention from the saved out and log-sum-exp",
    order=96, stem="attention", forward="attention",
    backward_of=Backward(saved={"q": "q", "k": "k", "v": "v", "out": "out", "lse": "lse"},
                         upstream={"dout": "out"}, grads={"dq": "q", "dk": "k", "dv": "v"}),
    dims=DIMS,
    tensors=(Tensor("q", DIMS), Tensor("k", DIMS), Tensor("v", DIMS),
             Tensor("out", DIMS, init=lambda shape, rng, dims: np.zeros(shape, F32)),
             Tensor("lse", ("batch", "heads", "time"), init=lambda shape, rng, dims: np.zeros(shape, F32)),
             Tensor("dout", DIMS, init=c.upstream_gradient),
             *(Tensor(n, DIMS, role="out", error_scale=_scale_of(n),
                      tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["time"]) + sum_rtol(d["head_dim"])))
               for n in ("dq", "dk", "dv"))),
    derived=derive_forward,
    reference=backward_reference, numpy=numpy_attention_backward,
    flops=lambda d: 2.5 * _flops(d), flops_note="recompute q.k, then dP, dv, dq, dk: 5 products of the triangle",
    bytes=lambda d: _bytes(d) + 4 * 4 * d["batch"] * d["heads"] * d["time"] * d["head_dim"],
    bound="compute",
    size_to_dims=size_to_dims, ladder=LADDER, quick_ladder=QUICK, gpu_ladder=GPU,
    check_dims=CHECKS, long_check_dims=LONG,
    distributions=("normal", "outliers", "constant_rows"),
    naive_float32=numpy_attention_backward, mutants=BACKWARD_MUTANTS)

DECLARED = (ATTENTION, ATTENTION_BACKWARD)
