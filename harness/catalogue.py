"""The catalogue: every primitive declared once, for every backend.

A declaration says what the inputs are for a size, how to generate them (seeded,
several distributions), the float64 NumPy reference, FLOP and byte counts, the
tolerance, and the size ladder. Backends never touch this file: they are handed
numpy inputs made here and return a numpy output that is checked here.

Sizes. Each primitive has three ladders: the CPU one, a short one for --quick, and a
larger one for device backends (a GPU needs ~2^26 elements in flight to show its memory
bandwidth). A *ladder size* is one integer n (what the charts put on the x axis); `dims_for`
turns it into the primitive's dimensions: (n,) for elementwise, (n, n) rows x cols for
softmax/layernorm, (n, n, n) = (M, K, N) for matmul. Correctness is also checked at
explicit *check dims*: odd, non-square, not multiples of any tile (1, 127, 129, 1000).

Tolerances (float32 results against a float64 reference). An element passes when

    |got - ref| <= atol + rtol * scale

where scale is |ref|, except for two primitives whose rounding error does not follow
the size of the result:
  matmul     scale = (|A| @ |B|), the textbook bound of a dot product's rounding error:
             a C[i, j] that is ~0 through cancellation of large terms is allowed the
             error its terms imply, while a kernel writing zeros still fails by a factor
             of ~1/(rtol*sqrt(K));
  layernorm  scale = |ref| + |gamma| * rstd * max|x| of the row: rounding happens at
             the scale of the inputs and normalisation amplifies it by rstd.
For results that are sums of n terms (softmax, layernorm rows, matmul dot products)
rtol grows like sqrt(n) (see sum_rtol). Each rtol/atol below was calibrated with
`python -m harness calibrate`, which measures the worst error of NumPy float32 and of
a naive sequential float32 accumulation on every distribution and check size; the
tolerances sit a few times above that worst case and far below what a wrong kernel
produces. atol is never large compared with typical outputs, so an all-zeros output
fails every primitive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import distributions

F32_EPS = float(np.finfo(np.float32).eps)       # 1.19e-7
GELU_SCALE = math.sqrt(2.0 / math.pi)
LAYERNORM_EPS = 1e-5


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclass(frozen=True)
class Primitive:
    name: str
    summary: str
    dim_names: tuple[str, ...]
    dims_for: Callable[[int], tuple[int, ...]]            # ladder size n -> dims
    input_shapes: Callable[[tuple], dict[str, tuple]]       # dims -> {input name: shape}, in call order
    output_shape: Callable[[tuple], tuple]
    reference: Callable[..., np.ndarray]                    # float64 inputs -> float64 output
    flops: Callable[[tuple], float]
    bytes: Callable[[tuple], float]                         # minimum DRAM traffic: read inputs once, write output once
    tolerance: Callable[[tuple], Tolerance]
    ladder: tuple[int, ...]
    quick_ladder: tuple[int, ...]
    gpu_ladder: tuple[int, ...]                             # device backends: large enough to fill an H200
    check_dims: tuple[tuple[int, ...], ...]
    distributions: tuple[str, ...]
    bound: str                                              # "memory" or "compute": which peak to compare with
    flops_note: str = ""
    # Which inputs a distribution applies to; the others are N(0, 1) (layernorm's gamma/beta, etc.).
    data_inputs: tuple[str, ...] = ("x",)
    extra_inputs: Callable[[tuple, np.random.Generator], dict[str, np.ndarray]] | None = None
    error_scale: Callable[[dict, np.ndarray], np.ndarray] | None = None
    distribution_args: dict = field(default_factory=dict)

    def dims_from_inputs(self, arrays: dict[str, np.ndarray]) -> tuple[int, ...]:
        """Recover dims from actual arrays (used to validate user input)."""
        return _DIMS_FROM_INPUTS[self.name](arrays)

    def shape_label(self, dims: tuple[int, ...]) -> str:
        return "x".join(str(d) for d in dims)

    def make_inputs(self, dims: tuple[int, ...], distribution: str = "normal", seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded float32, C-contiguous inputs for these dims."""
        if distribution not in self.distributions:
            raise ValueError(f"{self.name}: distribution {distribution!r} does not apply "
                             f"(choose from {', '.join(self.distributions)})")
        # One independent stream per (primitive, dims, distribution, seed): the same case
        # always gets the same data, whatever ran before it.
        key = [seed, *dims, sum(map(ord, self.name)), sum(map(ord, distribution))]
        rng = np.random.default_rng(key)
        gen = distributions.GENERATORS[distribution]
        args = self.distribution_args.get(distribution, {})
        shapes = self.input_shapes(dims)
        out = {}
        for name, shape in shapes.items():
            if name in self.data_inputs:
                out[name] = np.ascontiguousarray(gen(shape, rng, **args), dtype=np.float32)
        if self.extra_inputs is not None:
            out.update(self.extra_inputs(dims, rng))
        return {name: out[name] for name in shapes}          # keep call order

    def reference_output(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.reference(*(np.asarray(a, dtype=np.float64) for a in inputs.values()))

    def scale(self, inputs: dict[str, np.ndarray], ref: np.ndarray) -> np.ndarray:
        return np.abs(ref) if self.error_scale is None else self.error_scale(inputs, ref)


# ----------------------------------------------------------------------------- references

def ref_add(a, b):
    return a + b


def ref_relu(x):
    return np.maximum(x, 0.0)


def ref_gelu(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + 0.044715 * x ** 3)))


def ref_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_layernorm(x, gamma, beta):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYERNORM_EPS) * gamma + beta


def ref_matmul(a, b):
    return a @ b


def matmul_error_scale(inputs, ref):
    return np.abs(inputs["a"].astype(np.float64)) @ np.abs(inputs["b"].astype(np.float64))


def layernorm_error_scale(inputs, ref):
    """|ref| + |gamma| * rstd * max|x| per row: float32 rounds x and the mean at the scale of
    max|x|, and normalisation multiplies that rounding by rstd (316x for a constant row,
    where eps alone keeps the division finite)."""
    x = inputs["x"].astype(np.float64)
    var = x.var(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + LAYERNORM_EPS)
    return np.abs(ref) + np.abs(inputs["gamma"].astype(np.float64)) * rstd * np.abs(x).max(axis=-1, keepdims=True)


def sum_rtol(n: int) -> float:
    """Relative tolerance for a result built from a sum of n float32 terms: rounding errors
    of a sum grow like sqrt(n) * eps (random walk); 4x that, plus a few ulp for exp/sqrt/div."""
    return 4 * F32_EPS * math.sqrt(n) + 8 * F32_EPS


def layernorm_params(dims, rng):
    cols = dims[1]
    gamma = (1.0 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(cols)).astype(np.float32)
    return {"gamma": gamma, "beta": beta}


def _dims_elementwise(arrays):
    return (next(iter(arrays.values())).shape[0],)


def _dims_rows(arrays):
    return tuple(arrays["x"].shape)


def _dims_matmul(arrays):
    (m, k), n = arrays["a"].shape, arrays["b"].shape[1]
    return (m, k, n)


_DIMS_FROM_INPUTS = {"add": _dims_elementwise, "relu": _dims_elementwise, "gelu": _dims_elementwise,
                     "softmax": _dims_rows, "layernorm": _dims_rows, "matmul": _dims_matmul}

# ----------------------------------------------------------------------------- declarations

ELEMENTWISE_LADDER = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26)
ELEMENTWISE_QUICK = (1 << 10, 1 << 14, 1 << 18, 1 << 20)
ELEMENTWISE_GPU = (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26)
ELEMENTWISE_CHECKS = ((1,), (3,), (4,), (5,), (127,), (129,), (1000,), (4097,))
ROWS_LADDER = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
ROWS_QUICK = (64, 256, 1024)
ROWS_GPU = (256, 1024, 2048, 4096, 8192)
ROWS_CHECKS = ((1, 1), (1, 127), (3, 129), (127, 33), (17, 1000), (2, 4097))
MATMUL_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)
MATMUL_QUICK = (16, 64, 256, 512)
MATMUL_GPU = (128, 256, 512, 1024, 2048, 4096)
MATMUL_CHECKS = ((1, 1, 1), (1, 129, 127), (127, 1, 33), (64, 64, 64), (129, 127, 131), (33, 1000, 17))


def _elementwise(name, summary, n_inputs, reference, flops_per_elem, tol, dists, note=""):
    names = ("a", "b") if n_inputs == 2 else ("x",)
    return Primitive(
        name=name, summary=summary, dim_names=("n",),
        dims_for=lambda n: (n,),
        input_shapes=lambda d: {k: (d[0],) for k in names},
        output_shape=lambda d: (d[0],),
        reference=reference,
        flops=lambda d: float(flops_per_elem * d[0]),
        bytes=lambda d: float(4 * (n_inputs + 1) * d[0]),
        tolerance=lambda d: tol,
        ladder=ELEMENTWISE_LADDER, quick_ladder=ELEMENTWISE_QUICK, gpu_ladder=ELEMENTWISE_GPU, check_dims=ELEMENTWISE_CHECKS,
        distributions=dists, bound="memory", flops_note=note, data_inputs=names)


PRIMITIVES: dict[str, Primitive] = {}


def _declare(p: Primitive):
    PRIMITIVES[p.name] = p


_declare(_elementwise(
    "add", "elementwise a + b", 2, ref_add, 1,
    Tolerance(atol=1e-7, rtol=2 * F32_EPS),      # one correctly rounded fp32 add: <= 0.5 ulp
    ("normal", "outliers", "wide")))
_declare(_elementwise(
    "relu", "elementwise max(x, 0)", 1, ref_relu, 1,
    Tolerance(atol=0.0, rtol=0.0),               # exact: any difference is a bug
    ("normal", "outliers", "wide")))
_declare(_elementwise(
    "gelu", "elementwise GELU, tanh approximation (GPT-2)", 1, ref_gelu, 8,
    Tolerance(atol=1e-6, rtol=1e-5),             # fp32 tanhf/expf: a few ulp, amplified near the tanh saturation
    ("normal", "outliers", "wide"),
    note="8 FLOP/element, counting tanh as one"))

_declare(Primitive(
    name="softmax", summary="row-wise softmax over the last axis, numerically stable",
    dim_names=("rows", "cols"),
    dims_for=lambda n: (n, n),
    input_shapes=lambda d: {"x": d},
    output_shape=lambda d: d,
    reference=ref_softmax,
    flops=lambda d: 5.0 * d[0] * d[1],
    bytes=lambda d: 8.0 * d[0] * d[1],
    tolerance=lambda d: Tolerance(atol=1e-9, rtol=sum_rtol(d[1])),
    ladder=ROWS_LADDER, quick_ladder=ROWS_QUICK, gpu_ladder=ROWS_GPU, check_dims=ROWS_CHECKS,
    distributions=("normal", "outliers", "large_offset", "constant_rows"),
    bound="memory", flops_note="5 FLOP/element: max, subtract, exp, add, scale"))

_declare(Primitive(
    name="layernorm", summary="row-wise layer normalisation with gamma, beta, eps=1e-5",
    dim_names=("rows", "cols"),
    dims_for=lambda n: (n, n),
    input_shapes=lambda d: {"x": d, "gamma": (d[1],), "beta": (d[1],)},
    output_shape=lambda d: d,
    reference=ref_layernorm,
    flops=lambda d: 8.0 * d[0] * d[1],
    bytes=lambda d: 4.0 * (2 * d[0] * d[1] + 2 * d[1]),
    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d[1])),
    ladder=ROWS_LADDER, quick_ladder=ROWS_QUICK, gpu_ladder=ROWS_GPU, check_dims=ROWS_CHECKS,
    distributions=("normal", "outliers", "large_offset", "constant_rows"),
    bound="memory", flops_note="8 FLOP/element: sum, square-sum, subtract, scale, shift",
    extra_inputs=layernorm_params,
    error_scale=layernorm_error_scale,
    distribution_args={"large_offset": {"offset": 100.0}}))

_declare(Primitive(
    name="matmul", summary="C = A @ B, A (M, K), B (K, N)",
    dim_names=("M", "K", "N"),
    dims_for=lambda n: (n, n, n),
    input_shapes=lambda d: {"a": (d[0], d[1]), "b": (d[1], d[2])},
    output_shape=lambda d: (d[0], d[2]),
    reference=ref_matmul,
    flops=lambda d: 2.0 * d[0] * d[1] * d[2],
    bytes=lambda d: 4.0 * (d[0] * d[1] + d[1] * d[2] + d[0] * d[2]),
    tolerance=lambda d: Tolerance(atol=1e-6, rtol=sum_rtol(d[1])),
    ladder=MATMUL_LADDER, quick_ladder=MATMUL_QUICK, gpu_ladder=MATMUL_GPU, check_dims=MATMUL_CHECKS,
    distributions=("normal", "outliers", "positive"),
    bound="compute", flops_note="2*M*N*K",
    data_inputs=("a", "b"),
    error_scale=matmul_error_scale))


def get(name: str) -> Primitive:
    from .errors import UsageError
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise UsageError(f"unknown primitive {name!r}; valid: {', '.join(PRIMITIVES)}") from None
