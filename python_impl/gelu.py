"""gelu: GELU in the tanh approximation used by GPT-2 (and by llm.c):

    gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))

Not the exact erf form: GPT-2 was trained with this one, so it is the one to match.

Variants (naive first):
  loop     index loop, the formula written out per element
  hoisted  constants hoisted and x^3 as x*x*x (no pow), local name for math.tanh
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


VARIANTS = [gelu_loop, gelu_hoisted]      # lesson order: naive first
