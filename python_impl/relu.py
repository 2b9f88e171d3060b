"""relu: elementwise max(x, 0).

Variants (naive first):
  loop     index loop with an if (a branch per element, like a naive kernel)
  comp     list comprehension with a conditional expression: fewer bytecodes per element

Backward (dx = dy where x > 0, else 0; at x = 0 exactly, 0, as in PyTorch):
  loop     index loop with an if, as the forward
  comp     a comprehension over zip(x, dy)
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




def relu_backward_loop(x, dy):
    dx = [0.0] * len(x)
    for i in range(len(x)):
        if x[i] > 0.0:
            dx[i] = dy[i]
    return dx


def relu_backward_comp(x, dy):
    return [g if v > 0.0 else 0.0 for v, g in zip(x, dy)]


VARIANTS = [relu_loop, relu_comp, relu_backward_loop, relu_backward_comp]      # lesson order: naive first
