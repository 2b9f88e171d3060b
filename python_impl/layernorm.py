"""layernorm: row-wise normalisation with a learned scale and shift (eps defaults to 1e-5):

    y[r, j] = (x[r, j] - mean_r) / sqrt(var_r + eps) * gamma[j] + beta[j]

var is the biased (population) variance, as in PyTorch's LayerNorm.

Variants (naive first):
  two_pass  pass 1: mean; pass 2: variance of (x - mean); pass 3: write. Stable.
  welford   mean and variance in ONE pass with Welford's update, which stays accurate
            when the mean is large (the textbook E[x^2] - E[x]^2 shortcut does not:
            it subtracts two huge, nearly equal numbers). The GPU and Mojo versions
            use the same update to read each row once.
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


VARIANTS = [layernorm_two_pass, layernorm_welford]      # lesson order: naive first
