"""add: elementwise c[i] = a[i] + b[i] — the "hello world" of every GPU course.

Variants (naive first):
  loop     index loop, one addition per iteration (what a CUDA thread does for one i)
  zip      iterate both lists together: no index arithmetic, ~2x less interpreter work
"""


def add_loop(a, b):
    out = [0.0] * len(a)
    for i in range(len(a)):
        out[i] = a[i] + b[i]
    return out


def add_zip(a, b):
    # The interpreter, not the arithmetic, is the cost in Python: fewer bytecodes per
    # element (no a[i], b[i], out[i] lookups) is the whole speedup.
    return [x + y for x, y in zip(a, b)]


VARIANTS = [add_loop, add_zip]      # lesson order: naive first
