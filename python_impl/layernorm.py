"""layernorm: row-wise normalisation with a learned scale and shift (eps defaults to 1e-5):

    y[r, j] = (x[r, j] - mean_r) / sqrt(var_r + eps) * gamma[j] + beta[j]

var is the biased (population) variance, as in PyTorch's LayerNorm.

Variants (naive first):
  two_pass  pass 1: mean; pass 2: variance of (x - mean); pass 3: write. Stable.
  welford   mean and variance in ONE pass with Welford's update, which stays accurate
            when the mean is large (the textbook E[x^2] - E[x]^2 shortcut does not:
            it subtracts two huge, nearly equal numbers). The GPU and Mojo versions
            use the same update to read each row once.

Backward, from x, gamma and dy (the statistics recomputed), with xhat = (x - mean) rstd
and g = dy * gamma:
    dx = rstd (g - mean(g) - xhat mean(g xhat)),   dgamma = sum_rows dy xhat,   dbeta = sum_rows dy
  recompute   per row: the statistics again, the two means, then dx; column sums after
  one_sweep   the column sums of dgamma and dbeta accumulated while each row is visited
"""
import math

EPS = 1e-5


def layernorm_two_pass(x, gamma, beta, eps=EPS):
    out = []
    for row in x:
        n = len(row)
        mean = sum(row) / n
        var = 0.0
        for v in row:
            d = v - mean
            var += d * d
        var /= n
        rstd = 1.0 / math.sqrt(var + eps)
        out.append([(v - mean) * rstd * g + b for v, g, b in zip(row, gamma, beta)])
    return out


def layernorm_welford(x, gamma, beta, eps=EPS):
    out = []
    for row in x:
        mean = 0.0
        m2 = 0.0                            # sum of squared deviations from the running mean
        for k, v in enumerate(row, start=1):
            d = v - mean
            mean += d / k
            m2 += d * (v - mean)            # uses the old AND the new mean: that is the trick
        rstd = 1.0 / math.sqrt(m2 / len(row) + eps)
        out.append([(v - mean) * rstd * g + b for v, g, b in zip(row, gamma, beta)])
    return out




def _row_stats(row, eps):
    n = len(row)
    mean = sum(row) / n
    var = sum((v - mean) * (v - mean) for v in row) / n
    return mean, 1.0 / math.sqrt(var + eps)


def layernorm_backward_recompute(x, gamma, dy, eps=EPS):
    dx = []
    for row, grow in zip(x, dy):
        mean, rstd = _row_stats(row, eps)
        xhat = [(v - mean) * rstd for v in row]
        g = [gi * ga for gi, ga in zip(grow, gamma)]
        mg = sum(g) / len(g)
        mgx = sum(a * b for a, b in zip(g, xhat)) / len(g)
        dx.append([rstd * (gj - mg - xj * mgx) for gj, xj in zip(g, xhat)])
    cols = len(gamma)
    dgamma = [0.0] * cols
    dbeta = [0.0] * cols
    for row, grow in zip(x, dy):                # a second sweep for the column sums
        mean, rstd = _row_stats(row, eps)
        for j in range(cols):
            dgamma[j] += grow[j] * (row[j] - mean) * rstd
            dbeta[j] += grow[j]
    return dx, dgamma, dbeta


def layernorm_backward_one_sweep(x, gamma, dy, eps=EPS):
    cols = len(gamma)
    dgamma, dbeta, dx = [0.0] * cols, [0.0] * cols, []
    for row, grow in zip(x, dy):
        mean, rstd = _row_stats(row, eps)
        xhat = [(v - mean) * rstd for v in row]
        g = [gi * ga for gi, ga in zip(grow, gamma)]
        mg = sum(g) / cols
        mgx = sum(a * b for a, b in zip(g, xhat)) / cols
        dx.append([rstd * (gj - mg - xj * mgx) for gj, xj in zip(g, xhat)])
        for j in range(cols):                   # this row's share of the column sums, now
            dgamma[j] += grow[j] * xhat[j]
            dbeta[j] += grow[j]
    return dx, dgamma, dbeta


VARIANTS = [layernorm_two_pass, layernorm_welford, layernorm_backward_recompute, layernorm_backward_one_sweep]      # lesson order: naive first
