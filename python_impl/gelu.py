"""gelu: GELU in the tanh approximation used by GPT-2 (and by llm.c):

    gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))

Not the exact erf form: GPT-2 was trained with this one, so it is the one to match.

Variants (naive first):
  loop     index loop, the formula written out per element
  hoisted  constants hoisted and x^3 as x*x*x (no pow), local name for math.tanh

Backward (with u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u)):
    dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
  loop     the formula per element, constants recomputed
  hoisted  constants hoisted and t computed once, x*x reused
"""
import math

GELU_SCALE = math.sqrt(2.0 / math.pi)


def gelu_loop(x):
    out = [0.0] * len(x)
    for i in range(len(x)):
        v = x[i]
        out[i] = 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    return out


def gelu_hoisted(x):
    # Each global/attribute lookup and each ** is interpreter work; a local tanh and a
    # precomputed constant remove them from the inner loop.
    tanh = math.tanh
    s = GELU_SCALE
    return [0.5 * v * (1.0 + tanh(s * (v + 0.044715 * v * v * v))) for v in x]




def gelu_backward_loop(x, dy):
    dx = [0.0] * len(x)
    for i in range(len(x)):
        v = x[i]
        t = math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3))
        du = math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * v ** 2)
        dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du)
    return dx


def gelu_backward_hoisted(x, dy):
    tanh, s, k3 = math.tanh, GELU_SCALE, 3 * 0.044715
    out = []
    for v, g in zip(x, dy):
        vv = v * v
        t = tanh(s * (v + 0.044715 * vv * v))
        out.append(g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * s * (1.0 + k3 * vv)))
    return out


VARIANTS = [gelu_loop, gelu_hoisted, gelu_backward_loop, gelu_backward_hoisted]      # lesson order: naive first
