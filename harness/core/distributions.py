"""Input distributions: N(0,1) and the adversarial cases that break careless kernels.

Each generator takes a shape and a numpy Generator and returns float32 data. Which
distributions apply to which primitive is declared in the catalogue.

  normal         N(0, 1): the everyday case.
  outliers       rows shaped like [1000, 1, 2, 3, 1, 2, 3, ...] every 4th row (for 1-D
                 inputs: every 16th element is +-1000). Softmax must give [1, 0, 0, ...]
                 there, layernorm must not lose the small values to the big one.
  large_offset   N(0, 1) + offset (1e4 before a softmax): exp(x) overflows unless the
                 row max is subtracted; mean-based variance formulas lose all precision.
  constant_rows  every row is one repeated value: softmax must give exactly 1/cols,
                 layernorm has variance 0 and must return beta (eps keeps it finite).
  small_spread   zero-mean rows whose spread (1e-3 ... 1e-1, log-uniform per row) puts the
                 variance near or below layernorm's eps = 1e-5: the only rows where eps
                 changes the answer, so a wrong eps shows here.
  dc_offset      rows with a large offset and a small spread, both per row: offsets of
                 +-1e3 ... 1e4, spreads of 1e-1 ... 1e-3. A float32 mean is off by an ulp of the
                 offset (1e-3 at 1e4), which is 1-100 % of the spread: any algorithm that
                 subtracts a float32 mean from x loses the answer; shifting by a value of
                 the row first (exact, by Sterbenz's lemma) keeps it.
  wide           magnitudes from 1e-4 to 1e4, both signs, and exact zeros: saturation of
                 tanh in GELU, sign handling in ReLU.
  positive       U(0, 1): no cancellation in sums, a different error regime for matmul.
"""
import numpy as np

OUTLIER_ROW_EVERY = 4
OUTLIER_ELEMENT_EVERY = 16


def normal(shape, rng, **_):
    return rng.standard_normal(shape, dtype=np.float32)


def outliers(shape, rng, **_):
    x = rng.standard_normal(shape, dtype=np.float32)
    if len(shape) == 1:
        x[::OUTLIER_ELEMENT_EVERY] = 1000.0
        x[OUTLIER_ELEMENT_EVERY // 2::OUTLIER_ELEMENT_EVERY] = -1000.0
        return x
    cols = shape[-1]
    pattern = np.empty(cols, dtype=np.float32)
    pattern[0] = 1000.0
    if cols > 1:
        pattern[1:] = (np.arange(cols - 1) % 3) + 1       # 1, 2, 3, 1, 2, 3, ...
    x[::OUTLIER_ROW_EVERY] = pattern
    return x


def large_offset(shape, rng, offset=1e4, **_):
    return (rng.standard_normal(shape) + offset).astype(np.float32)


def constant_rows(shape, rng, **_):
    if len(shape) == 1:
        return np.full(shape, np.float32(rng.standard_normal() * 3), dtype=np.float32)
    values = (rng.standard_normal(shape[:-1]) * 3).astype(np.float32)
    return np.repeat(values[..., None], shape[-1], axis=-1)


def _row_shape(shape):
    """One value per row (per element for 1-D inputs), broadcastable against `shape`."""
    return shape[:-1] + (1,) if len(shape) > 1 else shape


def _log_uniform(shape, rng, low, high):
    return 10.0 ** rng.uniform(np.log10(low), np.log10(high), size=shape)


def small_spread(shape, rng, **_):
    spread = _log_uniform(_row_shape(shape), rng, 1e-3, 1e-1)
    return (rng.standard_normal(shape) * spread).astype(np.float32)


def dc_offset(shape, rng, **_):
    rows = _row_shape(shape)
    offset = _log_uniform(rows, rng, 1e3, 1e4) * rng.choice(np.array([-1.0, 1.0]), size=rows)
    spread = _log_uniform(rows, rng, 1e-3, 1e-1)
    return (offset + spread * rng.standard_normal(shape)).astype(np.float32)


def wide(shape, rng, **_):
    mag = 10.0 ** rng.uniform(-4, 4, size=shape)
    sign = rng.choice(np.array([-1.0, 1.0]), size=shape)
    x = (sign * mag).astype(np.float32)
    x.reshape(-1)[3::11] = 0.0      # exact zeros, but not at index 0: n=1 stays non-trivial
    return x


def positive(shape, rng, **_):
    return rng.random(shape, dtype=np.float32)


GENERATORS = {
    "normal": normal,
    "outliers": outliers,
    "large_offset": large_offset,
    "constant_rows": constant_rows,
    "small_spread": small_spread,
    "dc_offset": dc_offset,
    "wide": wide,
    "positive": positive,
}
