"""relu: elementwise max(x, 0).

Variants (naive first):
  loop     index loop with an if (a branch per element, like a naive kernel)
  comp     list comprehension with a conditional expression: fewer bytecodes per element
"""


def relu_loop(x):
    out = [0.0] * len(x)
    for i in range(len(x)):
        if x[i] > 0.0:
            out[i] = x[i]
    return out


def relu_comp(x):
    # A conditional expression, not max(v, 0.0): a builtin call per element costs more.
    return [v if v > 0.0 else 0.0 for v in x]


VARIANTS = [relu_loop, relu_comp]      # lesson order: naive first
