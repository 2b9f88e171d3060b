"""cross_entropy: softmax and the negative log-likelihood fused, from logits (batch, classes)
and int64 labels (batch,):

    losses[r] = log(sum_j exp(x[r, j] - m_r)) + (m_r - x[r, label_r]),   m_r = max_j x[r, j]
    loss      = mean_r losses[r]

and its backward, the gradient of the mean loss: dlogits = (softmax(x) - onehot(label)) / batch.

The order of the operations is the lesson. m_r - x[r, label] is exact (Sterbenz) when the
two are within 2x of each other, and the log term is at most log(classes); computing
(m + log s) - x[label] instead rounds at the size of m, 5e-4 for logits near 1e4, on a loss
that may be 1e-3. So the error scale is 1 + |m - x[label]| (the log term's rounding, plus the
difference's), never the logits' size, and the NumPy idiom, which adds m back first, is
measured on logits far from zero (`large_offset` +1e4, `wide` up to +-1e4, `outliers` 1000)
but not held to them. Nothing may overflow: exp only ever sees x - m <= 0.
"""
import numpy as np

from ..core.declaration import Backward, Mutant, Primitive, Step, Tensor, Tolerance, sum_rtol
from . import _common as c
from .softmax import sequential_sum

F32 = np.float32


def labels_init(shape, rng, dims):
    return rng.integers(0, dims["classes"], size=shape, dtype=np.int64)


def label_range(dims):
    return (0, dims["classes"])


def _picked(x, labels):
    return x[np.arange(x.shape[0]), labels]


def reference(logits, labels):
    m = logits.max(axis=-1)
    losses = np.log(np.exp(logits - m[:, None]).sum(axis=-1)) + (m - _picked(logits, labels))
    return {"losses": losses, "loss": losses.mean()}


def _margin(inputs):
    x = inputs["logits"].astype(np.float64)
    return np.abs(x.max(axis=-1) - _picked(x, inputs["labels"]))


def losses_error_scale(inputs, refs, scalars):
    return 1.0 + _margin(inputs)


def loss_error_scale(inputs, refs, scalars):
    """The mean of the rows' own scales, plus the size of what it sums (up to log(classes) a
    row): a batch-term sum rounds at the size of its terms."""
    return np.float64((1.0 + _margin(inputs)).mean() + np.abs(refs["losses"]).mean())


def numpy_cross_entropy(logits, labels):
    """What a user writes: logsumexp with the max, then subtract the label's logit."""
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
    losses = lse - _picked(logits, labels)
    return losses, losses.mean()


def careful_cross_entropy(logits, labels):
    """float32, left-to-right sums, the exact difference m - x[label] kept apart."""
    m = logits.max(axis=-1, keepdims=True)
    losses = np.log(sequential_sum(np.exp(logits - m)))[:, 0] + (m[:, 0] - _picked(logits, labels))
    return losses, np.cumsum(losses, dtype=F32)[-1] / F32(losses.size)


def no_max_subtraction(logits, labels):
    with np.errstate(over="ignore", invalid="ignore"):
        losses = np.log(np.exp(logits).sum(axis=-1)) - _picked(logits, labels)
    return losses.astype(F32), F32(losses.mean())


def mean_over_classes(logits, labels):
    losses, _ = careful_cross_entropy(logits, labels)
    return losses, F32(losses.sum() / logits.shape[1])


def label_off_by_one(logits, labels):
    return careful_cross_entropy(logits, (labels + 1) % logits.shape[1])


CE_DIMS = ("batch", "classes")
# (1, 1): one class, the loss is exactly 0; (33, 10): a classifier's shape; (1000, 17) and
# (2, 4097): many rows, long rows.
CE_CHECKS = ((1, 1), (1, 127), (3, 129), (33, 10), (127, 33), (17, 1000), (2, 4097))

CROSS_ENTROPY = Primitive(
    steps=(Step("naive", "per row: the max, the sum of exponentials, the loss", python="two_pass", cuda="row_per_thread", mojo="scalar"),
           Step("online", "the max and the sum in one pass, as in the online softmax", python="online", cuda="warp_online"),),
    name="cross_entropy", summary="softmax + negative log-likelihood: per-row losses and their mean", order=80,
    dims=CE_DIMS,
    tensors=(Tensor("logits", ("batch", "classes")),
             Tensor("labels", ("batch",), dtype="int64", init=labels_init, valid_range=label_range),
             Tensor("losses", ("batch",), role="out", error_scale=losses_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["classes"]))),
             Tensor("loss", (), role="out", error_scale=loss_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-7, rtol=sum_rtol(d["classes"]) + sum_rtol(d["batch"])))),
    reference=reference, numpy=numpy_cross_entropy,
    flops=lambda d: 4 * d["batch"] * d["classes"], flops_note="4 FLOP/element: max, subtract, exp, add",
    size_to_dims=lambda n: (n, n), ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=CE_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "constant_rows"),
    stress=("outliers", "large_offset", "wide"),
    naive_float32=careful_cross_entropy,
    mutants=(
        Mutant("no_max_subtraction", "exp(x) without subtracting the row max: overflows", no_max_subtraction,
               caught_on=("outliers", "large_offset")),
        Mutant("adds_the_max_back_first", "(m + log s) - x[label]: the NumPy idiom, rounded at the logits' size",
               numpy_cross_entropy, caught_on=("large_offset",), where=lambda d: d["classes"] > 1),
        Mutant("mean_over_classes", "divides the summed losses by classes, not batch", mean_over_classes,
               caught_on=("normal",), where=lambda d: d["batch"] != d["classes"]),
        Mutant("label_off_by_one", "picks the logit next to the label", label_off_by_one,
               caught_on=("normal",), where=lambda d: d["classes"] > 1),
    ))


# ----------------------------------------------------------------------------- backward

def backward_reference(logits, labels):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    p[np.arange(p.shape[0]), labels] -= 1.0
    return p / logits.shape[0]


def backward_error_scale(inputs, refs, scalars):
    x = inputs["logits"].astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    p[np.arange(p.shape[0]), inputs["labels"]] += 1.0
    return p / x.shape[0]


def numpy_cross_entropy_backward(logits, labels):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    p[np.arange(p.shape[0]), labels] -= F32(1)
    return p / F32(logits.shape[0])


def naive_cross_entropy_backward(logits, labels):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p = e / sequential_sum(e)
    p[np.arange(p.shape[0]), labels] -= F32(1)
    return p / F32(logits.shape[0])


def no_batch_division(logits, labels):
    return numpy_cross_entropy_backward(logits, labels) * F32(logits.shape[0])


def no_onehot(logits, labels):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True) / F32(logits.shape[0])).astype(F32)


CROSS_ENTROPY_BACKWARD = Primitive(
    steps=(Step("naive", "per row: the max, the sum, then (softmax - onehot) / batch", python="loop", cuda="row_per_thread", mojo="scalar"),),
    name="cross_entropy_backward", summary="gradient of the mean loss: (softmax - onehot) / batch", order=81,
    stem="cross_entropy", forward="cross_entropy",
    backward_of=Backward(saved={"logits": "logits", "labels": "labels"}, grads={"dlogits": "logits"},
                         unit=("loss",)),
    dims=CE_DIMS,
    tensors=(Tensor("logits", ("batch", "classes")),
             Tensor("labels", ("batch",), dtype="int64", init=labels_init, valid_range=label_range),
             Tensor("dlogits", ("batch", "classes"), role="out", error_scale=backward_error_scale,
                    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d["classes"])))),
    reference=backward_reference, numpy=numpy_cross_entropy_backward,
    flops=lambda d: 5 * d["batch"] * d["classes"], flops_note="5 FLOP/element: max, subtract, exp, add, scale",
    size_to_dims=lambda n: (n, n), ladder=c.ROWS_LADDER, quick_ladder=c.ROWS_QUICK, gpu_ladder=c.ROWS_GPU,
    check_dims=CE_CHECKS, long_check_dims=c.ROWS_LONG,
    distributions=("normal", "constant_rows", "outliers", "large_offset", "wide"),
    naive_float32=naive_cross_entropy_backward,
    mutants=(
        Mutant("no_batch_division", "the gradient of the summed loss, not of the mean", no_batch_division,
               caught_on=("normal", "large_offset"), where=lambda d: d["batch"] > 1),
        Mutant("no_onehot", "forgets to subtract the label's 1", no_onehot,
               caught_on=("normal", "large_offset", "outliers")),
    ))

DECLARED = (CROSS_ENTROPY, CROSS_ENTROPY_BACKWARD)
