"""transpose: swap the two middle axes of a 4-D tensor, y[n][q][p][i] = x[n][p][q][i].
Its own backward: dx = transpose(dy).

Variants (naive first):
  loop      four index loops, one element at a time
  rows      the innermost row moves as one list: y[n][q][p] is a copy of x[n][p][q]
"""


def transpose_loop(x):
    y = []
    for n in range(len(x)):
        P, Q = len(x[n]), len(x[n][0])
        plane = []
        for q in range(Q):
            rows = []
            for p in range(P):
                row = []
                for i in range(len(x[n][p][q])):
                    row.append(x[n][p][q][i])
                rows.append(row)
            plane.append(rows)
        y.append(plane)
    return y


def transpose_rows(x):
    return [[[list(x_n[p][q]) for p in range(len(x_n))] for q in range(len(x_n[0]))] for x_n in x]


VARIANTS = [transpose_loop, transpose_rows]      # lesson order: naive first
