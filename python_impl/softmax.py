"""softmax: row-wise over the last axis of a (rows, cols) matrix, numerically stable.

    y[r, j] = exp(x[r, j] - m_r) / sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]

Subtracting the row max changes nothing mathematically but keeps exp() from
overflowing (x = 1000 would give inf otherwise).

Variants (naive first):
  three_pass  pass 1: max; pass 2: sum of exp(x - max); pass 3: normalise. Reads each row 3x.
  online      one pass computes max and sum together ("online softmax", Milakov &
              Gimelshein 2018): when a new max appears, rescale the running sum by
              exp(old_max - new_max). Then one pass to write. This is the idea the
              CUDA warp-shuffle and Mojo single-pass kernels are built on.

Backward, from the forward's output y and the incoming dy:
    dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] * y[r, k])
  two_pass    pass 1: the row's dot product <dy, y>; pass 2: write dx
  fused_row   the same, with zip and a generator for the dot product (fewer bytecodes)
"""
import math


def softmax_three_pass(x):
    out = []
    for row in x:
        m = -math.inf
        for v in row:                       # pass 1: the max
            if v > m:
                m = v
        s = 0.0
        for v in row:                       # pass 2: the normaliser
            s += math.exp(v - m)
        out.append([math.exp(v - m) / s for v in row])   # pass 3: the output
    return out


def softmax_online(x):
    out = []
    for row in x:
        m = -math.inf
        s = 0.0
        for v in row:                       # one pass: running max and running sum
            if v > m:
                # Everything summed so far was scaled by exp(-m); re-scale it to the new max.
                s = s * math.exp(m - v) + 1.0
                m = v
            else:
                s += math.exp(v - m)
        inv = 1.0 / s
        out.append([math.exp(v - m) * inv for v in row])
    return out




def softmax_backward_two_pass(y, dy):
    out = []
    for yr, gr in zip(y, dy):
        s = 0.0
        for j in range(len(yr)):            # pass 1: <dy, y> for this row
            s += gr[j] * yr[j]
        row = [0.0] * len(yr)
        for j in range(len(yr)):            # pass 2: the gradient
            row[j] = yr[j] * (gr[j] - s)
        out.append(row)
    return out


def softmax_backward_fused_row(y, dy):
    out = []
    for yr, gr in zip(y, dy):
        s = sum(g * v for g, v in zip(gr, yr))
        out.append([v * (g - s) for g, v in zip(gr, yr)])
    return out


VARIANTS = [softmax_three_pass, softmax_online, softmax_backward_two_pass, softmax_backward_fused_row]      # lesson order: naive first
