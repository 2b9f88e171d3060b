"""adamw: one AdamW step (PyTorch's semantics), updating params, m and v in place:

    p <- p * (1 - lr * weight_decay)                   decoupled weight decay
    m <- beta1 * m + (1 - beta1) * g                   first moment
    v <- beta2 * v + (1 - beta2) * g^2                 second moment
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)          m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)

In place: the lists given are the optimizer's state, and the function returns nothing.

Variants (naive first):
  loop      the four updates per element, bias corrections recomputed per element
  hoisted   the bias corrections and 1 - lr * wd computed once per step
"""
import math


def adamw_loop(params, grads, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, step=1):
    for i in range(len(params)):
        params[i] *= 1.0 - lr * weight_decay
        m[i] = beta1 * m[i] + (1.0 - beta1) * grads[i]
        v[i] = beta2 * v[i] + (1.0 - beta2) * grads[i] * grads[i]
        m_hat = m[i] / (1.0 - beta1 ** step)
        v_hat = v[i] / (1.0 - beta2 ** step)
        params[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)


def adamw_hoisted(params, grads, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, step=1):
    decay = 1.0 - lr * weight_decay
    step_size = lr / (1.0 - beta1 ** step)           # torch folds the first correction into the step
    root_bias2 = math.sqrt(1.0 - beta2 ** step)
    sqrt = math.sqrt
    for i, g in enumerate(grads):
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i], v[i] = mi, vi
        params[i] = params[i] * decay - step_size * mi / (sqrt(vi) / root_bias2 + eps)


VARIANTS = [adamw_loop, adamw_hoisted]      # lesson order: naive first
