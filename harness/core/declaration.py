"""What a primitive is: one declaration that says everything the harness and every backend
need to know about it, and nothing keyed by its name anywhere else.

    Primitive(
        name="layernorm", dims=("rows", "cols"),
        tensors=(Tensor("x", ("rows", "cols")),                       # role "in" by default
                 Tensor("gamma", ("cols",), init=ones_ish),
                 Tensor("beta", ("cols",), init=small),
                 Tensor("y", ("rows", "cols"), role="out", tolerance=..., error_scale=...)),
        scalars=(Scalar("eps", "float32", 1e-5),),
        reference=ref_layernorm,        # float64, returns every output
        numpy=layernorm_numpy,          # the idiom a user would write: the `numpy` backend
        ...)

Tensors have a name, a shape written in dim names (so dims are read back from any set of
arrays, and mismatches are found, with no per-primitive code), a dtype (float32 or int64)
and a role: `in` (read only), `out` (written), `inout` (read, then updated in place).
Scalars are typed (int32, int64, float32) and have defaults.

Calling conventions, the same for every primitive:
  * reference(**tensors, **scalars): keyword arguments, float64 for float tensors; returns
    {output name: float64 array} (or one array when there is one output). Inout outputs
    are the updated values.
  * the NumPy idiom and python_impl functions: fn(*in_and_inout_tensors, **scalars), tensors
    positionally in declaration order; they return the `out` tensors (one value, or a
    tuple in declaration order) and update `inout` tensors in place.
  * compiled kernels: Mojo kernels receive one argument block whose slots are every tensor
    in declaration order, then the dims, then the scalars (harness/backends/mojo/args.py);
    CUDA kernels receive them by parameter name, in any order their signature gives
    (harness/backends/cuda/kernels.py).
"""
from __future__ import annotations

import inspect
import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from ..errors import InputError
from . import distributions

Dims = tuple[int, ...]
DTYPES = {"float32": np.float32, "int64": np.int64}
SCALAR_DTYPES = {"int32": np.int32, "int64": np.int64, "float32": np.float32}
ROLES = ("in", "out", "inout")
# What poisoned int64 outputs hold: negative (no index or count is) and made of two equal
# 32-bit halves (0x8111111181111111), so a device can write it with one 32-bit memset.
INT_SENTINEL = np.int64(-0x7EEE_EEEE_7EEE_EEEF)
F32_EPS = float(np.finfo(np.float32).eps)          # 1.19e-7


@dataclass(frozen=True)
class Tolerance:
    """An element passes when |got - ref| <= atol + rtol * scale (scale: the output's error scale)."""
    atol: float
    rtol: float


ToleranceSpec = Union[Tolerance, Callable[[dict], Tolerance]]


def sum_rtol(n: int) -> float:
    """Relative tolerance for a result built from a sum of n float32 terms: rounding errors
    of a sum grow like sqrt(n) * eps (random walk); 4x that, plus a few ulp for exp/sqrt/div."""
    return 4 * F32_EPS * math.sqrt(n) + 8 * F32_EPS


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[str | int, ...]                  # dim names (or fixed sizes); () is one value
    role: str = "in"                               # "in", "out" or "inout"
    dtype: str = "float32"                         # "float32" or "int64"
    # in / inout: how to make it. None: the case's distribution (float32 only); otherwise
    # fn(shape, rng, dims: dict) -> array, or fn(shape, rng, dims, draw) where draw(shape)
    # gives data of the case's distribution (a softmax backward's y = softmax(draw(shape))).
    init: Callable | None = None
    # out / inout: how close it must be, and to what scale (see harness/core/verify.py).
    tolerance: ToleranceSpec | None = None
    error_scale: Callable | None = None            # fn(inputs, refs, scalars) -> array; None: |ref|
    # int64 inputs that index something: fn(dims) -> (low, high), every value in [low, high).
    # Checked before any backend sees the array: a label out of range is a read out of bounds.
    valid_range: Callable[[dict], tuple[int, int]] | None = None

    @property
    def is_input(self) -> bool:
        return self.role in ("in", "inout")

    @property
    def is_output(self) -> bool:
        return self.role in ("out", "inout")

    @property
    def np_dtype(self):
        return DTYPES[self.dtype]


def _takes_draw(fn) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 4
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Backward:
    """How a backward primitive relates to its forward, for the finite-difference proof of its
    reference and for models: each name is a tensor of the backward primitive, mapped to the
    forward tensor it stands for.

      saved     inputs taken from the forward pass as they are (x, or the forward output y)
      upstream  inputs that are gradients of a forward output (dy for y)
      grads     outputs that are gradients of a forward input (dx for x)
      unit      forward outputs whose gradient is 1 (a mean loss), with no upstream input

    The backward of out = F(inputs) then computes, for the scalar
    L = sum_o <F_o, upstream_o> + sum_unit F_u, every dL/d(input) listed in grads."""
    saved: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    grads: dict[str, str] = field(default_factory=dict)
    unit: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One idea of the variant ladder that several languages share (the online softmax, a
    vectorised loop, tiles in fast memory), and the variant that takes it in each. The
    report and `show --step` put those variants side by side; variants in no step are
    shown in their own ladder order."""
    idea: str                                      # short and stable: an anchor and a CLI name
    what: str                                      # one line: what the step changes
    python: str | None = None
    cuda: str | None = None
    mojo: str | None = None

    def variants(self) -> dict[str, str]:
        """{language backend: variant} for the languages that take this step."""
        return {b: v for b, v in (("python", self.python), ("cuda", self.cuda), ("mojo", self.mojo)) if v}


@dataclass(frozen=True)
class Scalar:
    name: str
    dtype: str                                     # "int32", "int64" or "float32"
    default: float | int
    doc: str = ""

    def cast(self, value):
        """The value as the scalar's own type, exactly as a kernel receives it; InputError for a
        value that type cannot hold (a fraction for an integer, out of range, NaN)."""
        kind = SCALAR_DTYPES[self.dtype]
        if isinstance(value, (bool, np.bool_)):
            raise InputError(f"scalar {self.name!r} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"scalar {self.name!r} must be a number, got {type(value).__name__}") from None
        if not math.isfinite(number):
            raise InputError(f"scalar {self.name!r} must be finite, got {value}")
        if self.dtype == "float32":
            if abs(number) > float(np.finfo(np.float32).max):
                raise InputError(f"scalar {self.name!r} = {value} does not fit in float32")
            return kind(number)
        if number != int(number):
            raise InputError(f"scalar {self.name!r} is {self.dtype}, got the fraction {value}")
        info = np.iinfo(kind)
        if not info.min <= int(value) <= info.max:
            raise InputError(f"scalar {self.name!r} = {value} does not fit in {self.dtype}")
        return kind(int(value))


@dataclass(frozen=True)
class Mutant:
    """A near-miss wrong implementation that verification must catch.

    fn follows the NumPy idiom's calling convention. It must fail on every distribution in
    `caught_on`, at every check dims `where` accepts (default: all of them), and on the
    named extra dims (e.g. a ladder size where an error only shows at large K)."""
    name: str
    what: str
    fn: Callable
    caught_on: tuple[str, ...]
    where: Callable[[dict], bool] | None = None
    extra_dims: tuple[Dims, ...] = ()


@dataclass(frozen=True, repr=False)
class Primitive:
    name: str
    summary: str
    dims: tuple[str, ...]                          # dim names, in the order dims tuples use
    tensors: tuple[Tensor, ...]
    reference: Callable                            # float64: see the module docstring
    numpy: Callable                                # the NumPy idiom (float32): the `numpy` backend
    flops: Callable[[dict], float]
    size_to_dims: Callable[[int], Dims]            # ladder size n (the charts' x axis) -> dims
    ladder: tuple[int, ...]
    quick_ladder: tuple[int, ...]
    gpu_ladder: tuple[int, ...]                    # device backends: large enough to fill an H200
    check_dims: tuple[Dims, ...]                   # odd, non-square, not multiples of any tile
    distributions: tuple[str, ...]                 # every backend must pass these
    # Inputs where float32 idioms are known to lose the answer: the project's own
    # implementations must pass them; baselines (NumPy, the peers) are measured, not held to them.
    stress: tuple[str, ...] = ()
    scalars: tuple[Scalar, ...] = ()
    bound: str = "memory"                          # "memory" or "compute": which peak to compare with
    flops_note: str = ""
    bytes: Callable[[dict], float] | None = None   # None: every tensor once, inout twice (read + write)
    long_check_dims: tuple[Dims, ...] = ()         # big enough for threads, tiles and SIMD tails
    distribution_args: dict = field(default_factory=dict)
    naive_float32: Callable | None = None          # calibrate: a careless but honest float32 version
    mutants: tuple[Mutant, ...] = ()
    stem: str | None = None                        # implementation file stem (default: name)
    forward: str | None = None                     # a backward primitive names its forward ...
    backward_of: Backward | None = None            # ... and says how its tensors map onto it
    order: int = 100                               # position in tables and menus
    steps: tuple[Step, ...] = ()                   # the ladder's shared ideas, naive first
    # inputs that are functions of the others (a backward's saved forward outputs): fn(inputs: dict
    # of the drawn arrays, dims: dict) -> {tensor name: array}, applied after every tensor is drawn
    derived: Callable[[dict, dict], dict] | None = None

    def __repr__(self) -> str:
        return f"Primitive({self.name!r})"

    def __post_init__(self):
        names = [t.name for t in self.tensors] + [s.name for s in self.scalars] + list(self.dims)
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"{self.name}: names used twice: {sorted(dup)}")
        for t in self.tensors:
            if t.role not in ROLES:
                raise ValueError(f"{self.name}.{t.name}: role {t.role!r} is not one of {ROLES}")
            if t.dtype not in DTYPES:
                raise ValueError(f"{self.name}.{t.name}: dtype {t.dtype!r} is not one of {tuple(DTYPES)}")
            for d in t.shape:
                if isinstance(d, str) and d not in self.dims:
                    raise ValueError(f"{self.name}.{t.name}: shape names {d!r}, which is not a dim {self.dims}")
            if t.is_input and t.dtype != "float32" and t.init is None:
                raise ValueError(f"{self.name}.{t.name}: an {t.dtype} input needs an init function")
            if t.is_output and t.tolerance is None and t.dtype == "float32":
                raise ValueError(f"{self.name}.{t.name}: a float32 output needs a tolerance")
        for s in self.scalars:
            if s.dtype not in SCALAR_DTYPES:
                raise ValueError(f"{self.name}.{s.name}: scalar dtype {s.dtype!r} is not one of "
                                 f"{tuple(SCALAR_DTYPES)}")
        seen = {d for t in self.tensors if t.is_input for d in t.shape if isinstance(d, str)}
        if set(self.dims) - seen:
            raise ValueError(f"{self.name}: dims {sorted(set(self.dims) - seen)} appear in no input, "
                             f"so they cannot be read from the arrays")
        if not any(t.is_output for t in self.tensors):
            raise ValueError(f"{self.name}: no output")
        if not set(self.stress).isdisjoint(self.distributions):
            raise ValueError(f"{self.name}: a distribution is both regular and stress")
        ideas = [st.idea for st in self.steps]
        if len(set(ideas)) != len(ideas):
            raise ValueError(f"{self.name}: a step idea is named twice: {ideas}")
        if (self.forward is None) != (self.backward_of is None):
            raise ValueError(f"{self.name}: a backward primitive needs both forward= and backward_of=")
        if self.backward_of is not None:
            b = self.backward_of
            mine = {t.name for t in self.tensors}
            for group, names in (("saved", b.saved), ("upstream", b.upstream), ("grads", b.grads)):
                if set(names) - mine:
                    raise ValueError(f"{self.name}: backward_of.{group} names {sorted(set(names) - mine)}, "
                                     f"which are not its tensors")

    # ------------------------------------------------------------------ the parts
    @property
    def file_stem(self) -> str:
        return self.stem or self.name

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """in and inout tensors, in declaration order: what callers pass."""
        return tuple(t for t in self.tensors if t.is_input)

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        """out and inout tensors, in declaration order: what is verified."""
        return tuple(t for t in self.tensors if t.is_output)

    @property
    def returned(self) -> tuple[Tensor, ...]:
        """out tensors only: what a Python or NumPy implementation returns."""
        return tuple(t for t in self.tensors if t.role == "out")

    @property
    def has_inout(self) -> bool:
        return any(t.role == "inout" for t in self.tensors)

    @property
    def all_distributions(self) -> tuple[str, ...]:
        return self.distributions + self.stress

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no tensor {name!r}")

    # ------------------------------------------------------------------ dims and shapes
    def dims_dict(self, dims: Dims) -> dict[str, int]:
        return dict(zip(self.dims, (int(d) for d in dims)))

    def shape_of(self, tensor: Tensor | str, dims: Dims) -> tuple[int, ...]:
        t = self.tensor(tensor) if isinstance(tensor, str) else tensor
        d = self.dims_dict(dims)
        return tuple(d[s] if isinstance(s, str) else int(s) for s in t.shape)

    def shape_label(self, dims: Dims) -> str:
        return "x".join(str(d) for d in dims)

    def nbytes(self, tensor: Tensor, dims: Dims) -> int:
        return int(np.prod(self.shape_of(tensor, dims), dtype=np.int64)) * np.dtype(tensor.np_dtype).itemsize

    def flop_count(self, dims: Dims) -> float:
        return float(self.flops(self.dims_dict(dims)))

    def byte_count(self, dims: Dims) -> float:
        """Minimum DRAM traffic: every input read once, every output written once."""
        if self.bytes is not None:
            return float(self.bytes(self.dims_dict(dims)))
        return float(sum(self.nbytes(t, dims) * (2 if t.role == "inout" else 1) for t in self.tensors))

    def tolerance(self, output: Tensor | str, dims: Dims) -> Tolerance:
        t = self.tensor(output) if isinstance(output, str) else output
        tol = t.tolerance
        return tol(self.dims_dict(dims)) if callable(tol) else tol

    def scalar_values(self, overrides: dict | None = None) -> dict[str, object]:
        """Every scalar, typed, with overrides (unknown names are an InputError)."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - {s.name for s in self.scalars}
        if unknown:
            valid = ", ".join(s.name for s in self.scalars) or "none"
            raise InputError(f"{self.name}: unknown scalar {', '.join(sorted(unknown))} (scalars: {valid})")
        return {s.name: s.cast(overrides.get(s.name, s.default)) for s in self.scalars}

    # ------------------------------------------------------------------ user arrays
    def dims_from(self, arrays: dict[str, np.ndarray]) -> Dims:
        """Read the dims off input arrays; InputError when two tensors disagree about one."""
        found: dict[str, tuple[int, str]] = {}
        for t in self.inputs:
            shape = np.shape(arrays[t.name])
            for axis, d in enumerate(t.shape):
                if isinstance(d, int):
                    if shape[axis] != d:
                        raise InputError(self._mismatch(arrays))
                    continue
                if d in found and found[d][0] != shape[axis]:
                    raise InputError(self._mismatch(arrays))
                found.setdefault(d, (int(shape[axis]), t.name))
        return tuple(found[d][0] for d in self.dims)

    def _mismatch(self, arrays) -> str:
        got = ", ".join(f"{t.name}{tuple(np.shape(arrays[t.name]))}" for t in self.inputs)
        want = ", ".join(f"{t.name}({', '.join(map(str, t.shape))})" for t in self.inputs)
        return f"{self.name}: shapes do not match: got {got}; expected {want}"

    def validate(self, arrays: dict, values: bool = True) -> Dims:
        """Check user arrays against the declaration; return the dims. Every problem is one
        InputError line naming the input: missing or unexpected names, not an ndarray, wrong
        dtype or number of dimensions, empty, not C-contiguous, shapes that disagree, NaN/inf."""
        expected = [t.name for t in self.inputs]
        if sorted(arrays) != sorted(expected):
            missing = [n for n in expected if n not in arrays]
            extra = [n for n in arrays if n not in expected]
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(extra)}"] if extra else [])
            scalars = f" and scalars ({', '.join(sc.name for sc in self.scalars)})" if self.scalars else ""
            raise InputError(f"{self.name}: takes inputs ({', '.join(expected)}){scalars}; {'; '.join(parts)}")
        for t in self.inputs:
            a = arrays[t.name]
            if not isinstance(a, np.ndarray):
                raise InputError(f"{self.name}: input {t.name!r} must be a numpy array, got {type(a).__name__}")
            if a.dtype != np.dtype(t.np_dtype):          # native byte order only: '>f4' is refused
                raise InputError(f"{self.name}: input {t.name!r} must be {t.dtype}, got {a.dtype}")
            if a.ndim != len(t.shape):
                raise InputError(f"{self.name}: input {t.name!r} must be {len(t.shape)}-D, got shape {a.shape}")
            if a.size == 0:
                raise InputError(f"{self.name}: input {t.name!r} is empty (shape {a.shape})")
            if not a.flags.c_contiguous:
                raise InputError(f"{self.name}: input {t.name!r} must be C-contiguous (use np.ascontiguousarray)")
        dims = self.dims_from(arrays)
        if not values:                      # shapes and types only: a model's own intermediate tensors
            return dims
        for t in self.inputs:
            a = arrays[t.name]
            if t.dtype == "float32" and not np.isfinite(a).all():
                bad = np.argwhere(~np.isfinite(a))[0]
                raise InputError(f"{self.name}: input {t.name!r} has a non-finite value "
                                 f"({a[tuple(bad)]}) at index {list(map(int, bad))}")
            if t.valid_range is not None:
                low, high = t.valid_range(self.dims_dict(dims))
                outside = (a < low) | (a >= high)
                if outside.any():
                    bad = np.argwhere(outside)[0]
                    raise InputError(f"{self.name}: input {t.name!r} has {int(a[tuple(bad)])} at index "
                                     f"{list(map(int, bad))}, outside [{low}, {high})")
        return dims

    # ------------------------------------------------------------------ cases
    def make_inputs(self, dims: Dims, distribution: str = "normal", seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded, C-contiguous inputs (in and inout tensors) for these dims."""
        if distribution not in self.all_distributions:
            raise ValueError(f"{self.name}: distribution {distribution!r} does not apply "
                             f"(choose from {', '.join(self.all_distributions)})")
        # One independent stream per (primitive, dims, distribution, seed): the same case
        # always gets the same data, whatever ran before it. crc32 is stable across runs,
        # unlike hash().
        key = [seed, *dims, zlib.crc32(self.name.encode()), zlib.crc32(distribution.encode())]
        rng = np.random.default_rng(key)
        gen = distributions.GENERATORS[distribution]
        args = self.distribution_args.get(distribution, {})
        d = self.dims_dict(dims)
        out = {}
        def draw(shape):
            return gen(shape, rng, **args)
        for t in self.inputs:
            shape = self.shape_of(t, dims)
            if t.init is None:
                a = draw(shape)
            elif _takes_draw(t.init):
                a = t.init(shape, rng, d, draw)
            else:
                a = t.init(shape, rng, d)
            out[t.name] = np.ascontiguousarray(a, dtype=t.np_dtype)
        if self.derived is not None:
            for name, a in self.derived(dict(out), d).items():
                out[name] = np.ascontiguousarray(a, dtype=out[name].dtype)
        return out

    def reference_outputs(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> dict[str, np.ndarray]:
        """The float64 reference's value of every output (for inout: the updated value)."""
        args = {n: (a.astype(np.float64) if a.dtype == np.float32 else a.copy()) for n, a in inputs.items()}
        scal = {k: (float(v) if isinstance(v, np.floating) else int(v))
                for k, v in self.scalar_values(scalars).items()}
        refs = self.reference(**args, **scal)
        if not isinstance(refs, dict):
            refs = {self.outputs[0].name: refs} if len(self.outputs) == 1 else dict(
                zip((t.name for t in self.outputs), refs))
        missing = [t.name for t in self.outputs if t.name not in refs]
        if missing:
            raise ValueError(f"{self.name}: the reference does not return {missing}")
        return {t.name: np.asarray(refs[t.name]) for t in self.outputs}

    def error_scale(self, output: Tensor | str, inputs: dict, refs: dict, scalars: dict | None = None):
        t = self.tensor(output) if isinstance(output, str) else output
        if t.error_scale is None:
            return np.abs(refs[t.name])
        return t.error_scale(inputs, refs, self.scalar_values(scalars))

    # ------------------------------------------------------------------ calling convention
    def call_numpy_style(self, fn: Callable, arrays: dict, scalars: dict | None = None) -> dict:
        """Call fn the NumPy/Python way on `arrays` (inout ones are updated in place) and
        return every output by name: the returned `out` tensors and the inout arrays."""
        scal = self.scalar_values(scalars)
        result = fn(*(arrays[t.name] for t in self.inputs), **scal)
        returned = self.returned
        values = (result,) if len(returned) == 1 else () if not returned else tuple(result)
        if len(values) != len(returned):
            raise ValueError(f"{self.name}: implementation returned {len(values)} values, "
                             f"expected {len(returned)} ({', '.join(t.name for t in returned)})")
        outs = dict(zip((t.name for t in returned), values))
        for t in self.outputs:
            if t.role == "inout":
                outs[t.name] = arrays[t.name]
        return {t.name: outs[t.name] for t in self.outputs}
