"""adamw: one AdamW step, in place on the parameters and the two moment buffers, with
PyTorch's semantics (decoupled weight decay, bias correction by the step number t >= 1):

    p <- p * (1 - lr * weight_decay)
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)

An optimizer step is the first primitive whose outputs are its inputs (role `inout`): the
harness restores params, m and v from a pristine copy before every call, so each timed
call takes the same step from the same state.

The error model: m and v are each two products and a sum (rtol 4 eps of their terms'
size); the update is lr times r = m_hat / (sqrt(v_hat) + eps), whose float32 value has a
few roundings on each side of the division (rtol of lr * |r|), and p itself is
rounded once at its own size. When v is tiny, the update is most of p (a near cancellation)
and the float32 r is off by up to ~25 eps: rtol 32 eps of |p| + lr |r|. A parameter far
larger than its update (p = 1000, an update of 1e-3) cannot show a wrong bias correction
at all, so those mutants are judged on vectors that also hold ordinary values.
"""
import numpy as np

from ..core.declaration import F32_EPS, Mutant, Primitive, Scalar, Step, Tensor, Tolerance
from . import _common as c

F32 = np.float32
SCALARS = (Scalar("lr", "float32", 1e-3, "learning rate"),
           Scalar("beta1", "float32", 0.9, "first-moment decay"),
           Scalar("beta2", "float32", 0.999, "second-moment decay"),
           Scalar("eps", "float32", 1e-8, "added to sqrt(v_hat)"),
           Scalar("weight_decay", "float32", 1e-2, "decoupled: p *= 1 - lr * weight_decay"),
           Scalar("step", "int32", 3, "t >= 1, for the bias correction"))


def reference(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    p = params * (1.0 - lr * weight_decay)
    m = beta1 * m + (1.0 - beta1) * grads
    v = beta2 * v + (1.0 - beta2) * grads * grads
    m_hat, v_hat = m / (1.0 - beta1 ** step), v / (1.0 - beta2 ** step)
    return {"params": p - lr * m_hat / (np.sqrt(v_hat) + eps), "m": m, "v": v}


def _ratio(inputs, scalars):
    """r = m_hat / (sqrt(v_hat) + eps) in float64, from the inputs."""
    s = {k: float(x) for k, x in scalars.items()}
    g = inputs["grads"].astype(np.float64)
    m = s["beta1"] * inputs["m"].astype(np.float64) + (1 - s["beta1"]) * g
    v = s["beta2"] * inputs["v"].astype(np.float64) + (1 - s["beta2"]) * g * g
    return (m / (1 - s["beta1"] ** s["step"])) / (np.sqrt(v / (1 - s["beta2"] ** s["step"])) + s["eps"])


def params_error_scale(inputs, refs, scalars):
    return np.abs(refs["params"]) + float(scalars["lr"]) * np.abs(_ratio(inputs, scalars))


def m_error_scale(inputs, refs, scalars):
    b1 = float(scalars["beta1"])
    return np.abs(b1 * inputs["m"].astype(np.float64)) + np.abs((1 - b1) * inputs["grads"].astype(np.float64))


def v_error_scale(inputs, refs, scalars):
    b2 = float(scalars["beta2"])
    g = inputs["grads"].astype(np.float64)
    return np.abs(b2 * inputs["v"].astype(np.float64)) + np.abs((1 - b2) * g * g)


def numpy_adamw(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """In place, as torch.optim.AdamW's single-tensor loop writes it."""
    params *= F32(1) - lr * weight_decay
    m *= beta1
    m += (F32(1) - beta1) * grads
    v *= beta2
    v += (F32(1) - beta2) * grads * grads
    bias1, bias2 = F32(1) - beta1 ** F32(step), F32(1) - beta2 ** F32(step)
    params -= (lr / bias1) * m / (np.sqrt(v) / np.sqrt(bias2) + eps)


def _mutant(update):
    """An AdamW that gets one thing wrong, on copies: returns nothing, updates in place."""
    def fn(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
        update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step)
    return fn


def _adam_l2(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Adam with L2: weight decay added to the gradient, the pre-AdamW way."""
    numpy_adamw(params, grads + weight_decay * params, m, v, lr, beta1, beta2, eps, F32(0), step)


def _no_bias_correction(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    params *= F32(1) - lr * weight_decay
    m *= beta1
    m += (F32(1) - beta1) * grads
    v *= beta2
    v += (F32(1) - beta2) * grads * grads
    params -= lr * m / (np.sqrt(v) + eps)


def _step_off_by_one(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    numpy_adamw(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step + 1)


def _decay_without_lr(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """p *= 1 - weight_decay: the decay not scaled by the learning rate."""
    numpy_adamw(params, grads, m, v, lr, beta1, beta2, eps, F32(0), step)
    params *= F32(1) - weight_decay


def moment_init(shape, rng, dims):
    """An m from earlier steps: about a tenth of a gradient."""
    return (0.1 * rng.standard_normal(shape)).astype(F32)


def second_moment_init(shape, rng, dims):
    """A v from earlier steps: a running mean of squares, never negative."""
    return (0.1 * rng.standard_normal(shape)).astype(F32) ** 2


ADAMW = Primitive(
    steps=(Step("naive", "one element per step of a loop (a thread per element on a GPU)", python="loop", cuda="naive", mojo="scalar"),
           Step("vectorized", "several elements per instruction: float4 loads on a GPU, SIMD lanes on a CPU", cuda="vec4", mojo="simd"),),
    name="adamw", summary="one AdamW step in place on params, m, v (PyTorch's semantics)", order=90,
    dims=("n",),
    tensors=(Tensor("params", ("n",), role="inout", error_scale=params_error_scale,
                    tolerance=Tolerance(atol=1e-9, rtol=32 * F32_EPS)),
             Tensor("grads", ("n",)),
             Tensor("m", ("n",), role="inout", init=moment_init, error_scale=m_error_scale,
                    tolerance=Tolerance(atol=1e-12, rtol=4 * F32_EPS)),
             Tensor("v", ("n",), role="inout", init=second_moment_init, error_scale=v_error_scale,
                    tolerance=Tolerance(atol=1e-15, rtol=4 * F32_EPS))),
    scalars=SCALARS,
    reference=reference, numpy=numpy_adamw,
    flops=lambda d: 14 * d["n"], flops_note="14 FLOP/element, counting sqrt and the division as one each",
    size_to_dims=c.vector, ladder=c.ELEMENTWISE_LADDER, quick_ladder=c.ELEMENTWISE_QUICK,
    gpu_ladder=c.ELEMENTWISE_GPU, check_dims=c.ELEMENTWISE_CHECKS, long_check_dims=c.ELEMENTWISE_LONG,
    distributions=("normal", "outliers", "wide"),
    naive_float32=numpy_adamw,
    mutants=(
        Mutant("adam_l2", "weight decay added to the gradient (Adam + L2), not decoupled", _mutant(_adam_l2),
               caught_on=("normal", "outliers", "wide")),
        Mutant("no_bias_correction", "skips the 1 - beta^t corrections", _mutant(_no_bias_correction),
               caught_on=("normal", "outliers", "wide"), where=lambda d: d["n"] >= 3),
        Mutant("step_off_by_one", "corrects with t + 1", _mutant(_step_off_by_one),
               caught_on=("normal", "outliers", "wide"), where=lambda d: d["n"] >= 3),
        Mutant("decay_without_lr", "decays by weight_decay, not lr * weight_decay", _mutant(_decay_without_lr),
               caught_on=("normal", "outliers", "wide")),
    ))

DECLARED = (ADAMW,)
