"""bias_add: the linear layer's bias, y[r, j] = x[r, j] + b[j] for every row r.

Variants (naive first):
  loop     two nested index loops
  comp     one comprehension per row over zip(row, b)

Backward (db[j] = sum_r dy[r, j]; dx = dy passes through and is not computed):
  loop     column sums, row after row: one running sum per column
  zip      zip(*dy) turns the columns into tuples, and sum() adds each
"""


def bias_add_loop(x, b):
    out = []
    for row in x:
        new = [0.0] * len(row)
        for j in range(len(row)):
            new[j] = row[j] + b[j]
        out.append(new)
    return out


def bias_add_comp(x, b):
    return [[v + c for v, c in zip(row, b)] for row in x]


def bias_add_backward_loop(dy):
    db = [0.0] * len(dy[0])
    for row in dy:                      # row by row: the order a GPU block would see them in
        for j in range(len(row)):
            db[j] += row[j]
    return db


def bias_add_backward_zip(dy):
    return [sum(col) for col in zip(*dy)]


VARIANTS = [bias_add_loop, bias_add_comp, bias_add_backward_loop, bias_add_backward_zip]      # lesson order: naive first
