"""add: elementwise c[i] = a[i] + b[i] — the "hello world" of every GPU course.

Variants (naive first):
  loop     index loop, one addition per iteration (what a CUDA thread does for one i)
  zip      iterate both lists together: no index arithmetic, ~2x less interpreter work

Backward (da = db = dout: a sum passes its gradient to both inputs unchanged):
  loop     index loop writing both gradients
  copy     two list copies, dout[:]: the whole "kernel" is a memory copy
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




def add_backward_loop(dout):
    da, db = [0.0] * len(dout), [0.0] * len(dout)
    for i in range(len(dout)):
        da[i] = dout[i]
        db[i] = dout[i]
    return da, db


def add_backward_copy(dout):
    return dout[:], dout[:]


VARIANTS = [add_loop, add_zip, add_backward_loop, add_backward_copy]      # lesson order: naive first
