"""What each CUDA kernel is, read from its own .cu source: no table elsewhere.

A kernel becomes a variant of a primitive when a `// launch:` line sits directly above its
`extern "C" __global__` declaration, with optional `// requires:` lines in between:

    // launch: grid=(cdiv(N, T2_BN), cdiv(M, T2_BM)) block=T2_THREADS
    // requires: cols <= 1024 * REG_FLOATS -- the reason shown to the user when it is false
    extern "C" __global__ void __launch_bounds__(T2_THREADS)
    matmul_blocktile_2d(const float* __restrict__ A, const float* __restrict__ B, float* C,
                        int M, int N, int K)

  * The name is `<primitive>_<variant>` (harness/core/catalogue.py resolves it); variants
    are in file order, naive first. An extern "C" kernel without a launch line is compiled
    but never launched (`harness build` says so).
  * grid=, block= (an expression or a tuple of 1-3) and smem= (dynamic shared bytes,
    default 0) are Python-syntax integer arithmetic - + - * // % << >>, comparisons,
    and/or, parentheses, cdiv/min/max - over the primitive's dim names, `sms` (the GPU's
    SM count) and the file's integer `#define`s in effect at that line. `/` is refused:
    it would be float division in Python and truncation in C; write `//` or cdiv.
    Expressions are evaluated by a whitelisting walk of their syntax tree, never eval().
  * Parameters are matched BY NAME: a pointer names a tensor of the declaration (`float*`
    for float32, `long long*` for int64; `const` exactly for role "in"), a value names a
    dim (`int` or `long long`) or a declared scalar (`int` int32, `long long` int64, `float`
    float32). Every tensor and every scalar must be a parameter (of some step, below); the
    order is the kernel's own. `arguments()` lays values out in that order for the backend, the emulator tests
    and the GPU checks alike.

A variant of several kernels (steps). Some work needs more than one launch: matmul's
backward computes dA and dB, a fused layernorm backward writes per-block partial sums that a
second kernel reduces. Kernels named `<primitive>_<variant>__<step>` (two underscores), each
with its own `// launch:` line and adjacent in the file, are the steps of ONE variant,
launched in file order (on one stream: each step sees what the previous ones wrote):

    // launch: grid=min(rows, LNB_BLOCKS) block=...
    // scratch: partials float (min(rows, LNB_BLOCKS), 2, cols) -- each block's dgamma, dbeta sums
    extern "C" __global__ void __launch_bounds__(1024)
    layernorm_backward_fused__rows(const float* x, const float* gamma, const float* dy, float* dx,
                                   float* partials, int rows, int cols, float eps)

    // launch: grid=cdiv(cols, 256) block=256
    extern "C" __global__ void __launch_bounds__(256)
    layernorm_backward_fused__columns(const float* partials, float* dgamma, float* dbeta,
                                      int rows, int cols)

  * Each step takes the subset of tensors, dims and scalars it needs, by name; every tensor
    and scalar must be a parameter of SOME step, and every out/inout tensor must be written
    (a non-const pointer) by some step. A step may read (`const`) an out tensor or a scratch
    buffer only after an earlier step of the variant wrote it.
  * `// scratch: NAME TYPE (shape, ...) [-- what it holds]`, among a step's launch lines,
    declares a temporary device buffer of the variant (TYPE: float, int or long long; the
    shape's entries are launch-line expressions). Any step may take it as a pointer
    parameter named NAME. Its contents are undefined at the start of every run (the backend
    and the emulator tests fill it with NaN once): the first step that takes it must
    write it, not accumulate into it. A single-kernel variant may declare scratch too.
  * The limits below apply to every step; a variant runs only if all its steps can.
    `plan()` gives every step's Launch and every scratch buffer's shape for some dims.

Generic limits, checked before anything reaches a GPU (`limit()` says why, in one line):
a kernel that takes a dim as `int` refuses dims where a dim, or the element count of a
tensor or scratch buffer it takes, exceeds 2^31 - 1; grid within CUDA's (2^31-1, 65535,
65535); a block of whole warps, at most 1024 threads and at most its __launch_bounds__; at
most 48 KiB of dynamic shared memory; and every `// requires:` condition.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...core import catalogue
from ...core.declaration import Primitive
from ...env import REPO

# Where the .cu files live. Tests point it at a folder of their own to inject a kernel.
SOURCE_DIR = REPO / "cuda_impl"

DEFAULT_SM_COUNT = 132                 # H100/H200: used for limits when no GPU says otherwise
INT32_MAX = 2**31 - 1
MAX_THREADS = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SMEM = 48 * 1024           # without cudaFuncSetAttribute opt-in
WARP = 32

# C parameter types and what they carry.
POINTER_DTYPES = {"float": "float32", "long long": "int64"}
SCALAR_CTYPES = {"int": "int32", "long long": "int64", "float": "float32"}
NUMPY_OF_CTYPE = {"int": np.int32, "long long": np.int64, "float": np.float32}
CTYPE_OF_DTYPE = {"float32": "float", "int64": "long long", "int32": "int"}


class KernelSpecError(ValueError):
    """A kernel's source does not fit its declaration (or its launch line is malformed).
    One line naming the file, the kernel and the parameter or expression."""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------- what a spec is

@dataclass(frozen=True)
class Param:
    name: str
    ctype: str                         # "float", "int", "long long"
    pointer: bool
    const: bool                        # pointers: the pointee is const
    text: str                          # as written, for messages


@dataclass(frozen=True)
class Requirement:
    condition: str
    why: str


@dataclass(frozen=True)
class Scratch:
    """A temporary device buffer of a variant (`// scratch:`), passed to steps by name."""
    name: str
    ctype: str                         # "float", "int", "long long"
    shape: str                         # the shape's expression text, e.g. "(cdiv(rows, 8), 2, cols)"
    line: int
    what: str = ""

    @property
    def np_dtype(self):
        return NUMPY_OF_CTYPE[self.ctype]


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """One launched kernel: a whole variant, or one step of a variant of several."""
    file: str                          # "cuda_impl/softmax.cu": what messages and NVRTC name
    source: str                        # the whole file's text (what NVRTC and the emulator compile)
    primitive: str
    variant: str
    kernel: str                        # the extern "C" entry point
    line: int                          # of the `// launch:` line
    grid: str
    block: str
    smem: str
    requires: tuple[Requirement, ...]
    params: tuple[Param, ...]
    launch_bounds: int | None          # __launch_bounds__'s max threads, evaluated
    constants: dict = field(default_factory=dict)   # the file's integer #defines at the launch line
    step: str = ""                     # "" for a one-kernel variant; else the name after `__`
    scratch: tuple[Scratch, ...] = ()  # declared among this kernel's launch lines

    @property
    def where(self) -> str:
        return f"{self.file}: {self.kernel}"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True, eq=False)
class Variant:
    """One variant of a primitive: its kernels (one, or several steps launched in order) and
    the scratch buffers they share."""
    file: str
    source: str
    primitive: str
    variant: str
    steps: tuple[KernelSpec, ...]

    @property
    def where(self) -> str:
        return f"{self.file}: {self.steps[0].kernel}" if len(self.steps) == 1 else \
            f"{self.file}: {self.primitive}/{self.variant}"

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(s.kernel for s in self.steps)

    @property
    def scratch(self) -> tuple[Scratch, ...]:
        return tuple(sc for s in self.steps for sc in s.scratch)

    @property
    def line(self) -> int:
        return self.steps[0].line

    def only(self) -> KernelSpec:
        """The kernel of a one-kernel variant (ValueError for a variant of several steps)."""
        if len(self.steps) != 1:
            raise ValueError(f"{self.primitive}/{self.variant} has {len(self.steps)} steps "
                             f"({', '.join(s.step for s in self.steps)}): use plan() and each step")
        return self.steps[0]


@dataclass(frozen=True)
class Launch:
    """Everything cuLaunchKernel needs besides the arguments."""
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int

    @property
    def threads_per_block(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]


@dataclass(frozen=True)
class Plan:
    """A variant at some dims: every step's launch, in order, and every scratch buffer's shape."""
    variant: Variant
    launches: tuple[Launch, ...]
    scratch: dict                      # name -> (shape tuple, numpy dtype)

    @property
    def scratch_bytes(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                   for shape, dt in self.scratch.values())


@dataclass(frozen=True, eq=False)
class SourceFile:
    path: Path
    file: str
    text: str
    specs: tuple[KernelSpec, ...]      # launched kernels, in file order
    entries: tuple[str, ...]           # every extern "C" __global__ kernel, in file order
    variants: tuple[Variant, ...] = () # the specs grouped into variants, in file order


# ----------------------------------------------------------------------------- expressions

_FUNCTIONS = {"cdiv": cdiv, "min": min, "max": max}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
           ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b}
_COMPARE = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
            ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def _c_div(a: int, b: int) -> int:
    """C's integer division: truncation toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class _Bad(Exception):
    pass


def _validate(node: ast.AST, names: frozenset, c_mode: bool, top: bool = True) -> None:
    """Raise _Bad unless `node` uses only the whitelisted syntax and known names."""
    if isinstance(node, ast.Tuple):
        if not top or c_mode:
            raise _Bad("a tuple is only allowed as a whole grid= or block=")
        for e in node.elts:
            _validate(e, names, c_mode, top=False)
    elif isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise _Bad(f"{node.value!r} is not an integer")
    elif isinstance(node, ast.Name):
        if node.id not in names:
            raise _Bad(f"unknown name {node.id!r}")
    elif isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Div) and not c_mode:
            raise _Bad("`/` is float division here: write `//` (or cdiv(a, b) to round up)")
        if type(node.op) not in _BINOPS and not (c_mode and isinstance(node.op, ast.Div)):
            raise _Bad(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.left, names, c_mode, False)
        _validate(node.right, names, c_mode, False)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)) and not (isinstance(node.op, ast.Not) and not c_mode):
            raise _Bad(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.operand, names, c_mode, False)
    elif isinstance(node, ast.Compare) and not c_mode:
        if any(type(op) not in _COMPARE for op in node.ops):
            raise _Bad("only < <= > >= == != comparisons are allowed")
        for e in (node.left, *node.comparators):
            _validate(e, names, c_mode, False)
    elif isinstance(node, ast.BoolOp) and not c_mode:
        for e in node.values:
            _validate(e, names, c_mode, False)
    elif isinstance(node, ast.Call) and not c_mode:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
            raise _Bad("only cdiv(a, b), min(...) and max(...) may be called")
        if (node.func.id == "cdiv" and len(node.args) != 2) or len(node.args) < (2 if node.func.id == "cdiv" else 1):
            raise _Bad(f"{node.func.id} takes {'two' if node.func.id == 'cdiv' else 'at least one'} arguments")
        for e in node.args:
            _validate(e, names, c_mode, False)
    else:
        raise _Bad(f"{type(node).__name__} is not allowed (integer arithmetic only)")


def _evaluate(node: ast.AST, env: dict, c_mode: bool):
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, env, c_mode) for e in node.elts)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        a, b = _evaluate(node.left, env, c_mode), _evaluate(node.right, env, c_mode)
        if isinstance(node.op, (ast.FloorDiv, ast.Mod, ast.Div)) and b == 0:
            raise _Bad("division by zero")
        if isinstance(node.op, (ast.LShift, ast.RShift)) and not 0 <= b < 64:
            raise _Bad(f"shift by {b}")
        if isinstance(node.op, ast.Div):
            return _c_div(a, b)
        return _BINOPS[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, env, c_mode)
        return -v if isinstance(node.op, ast.USub) else (not v) if isinstance(node.op, ast.Not) else v
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env, c_mode)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, env, c_mode)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(e, env, c_mode) for e in node.values)
        return any(_evaluate(e, env, c_mode) for e in node.values)
    if isinstance(node, ast.Call):
        args = [_evaluate(e, env, c_mode) for e in node.args]
        if node.func.id == "cdiv" and args[1] == 0:
            raise _Bad("cdiv by zero")
        return _FUNCTIONS[node.func.id](*args)
    raise _Bad(f"{type(node).__name__} is not allowed")      # unreachable after _validate


@lru_cache(maxsize=4096)
def _parsed(text: str, names: frozenset, c_mode: bool) -> ast.AST:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise _Bad(f"not an expression ({e.msg})") from None
    _validate(tree, names, c_mode)
    return tree


_C_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")


def _c_constant(text: str, constants: dict) -> int | None:
    """The value of a `#define NAME text` when it is an integer expression, else None."""
    text = _C_INT_SUFFIX.sub(r"\1", text.strip())
    if not text:
        return None
    try:
        value = _evaluate(_parsed(text, frozenset(constants), True), constants, True)
    except _Bad:
        return None
    return value if type(value) is int else None


# ----------------------------------------------------------------------------- parsing a .cu

_LAUNCH = re.compile(r"^\s*//\s*launch:\s*(.*?)\s*$")
_REQUIRES = re.compile(r"^\s*//\s*requires:\s*(.*?)\s*$")
_SCRATCH = re.compile(r"^\s*//\s*scratch:\s*(.*?)\s*$")
_SCRATCH_DECL = re.compile(r"([A-Za-z_]\w*)\s+(float|int|long\s+long)\s*(\(.*\))$")
_EXTERN = re.compile(r'^\s*extern\s+"C"\s+__global__\b')
_DECL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+')
_BOUNDS = re.compile(r"__launch_bounds__\s*\(")
_NAME = re.compile(r"([A-Za-z_]\w*)\s*\(")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)(\()?(.*)$")
_UNDEF = re.compile(r"^\s*#\s*undef\s+([A-Za-z_]\w*)")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_LAUNCH_KEY = re.compile(r"(?:^|\s)(grid|block|smem)\s*=")
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}


def _blank_comments(text: str) -> str:
    return _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _closing(text: str, open_pos: int) -> int:
    depth = 0
    for i in range(open_pos, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _split_commas(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_param(text: str, where: str) -> Param:
    text = " ".join(text.split())
    m = re.fullmatch(r"(.*?)([A-Za-z_]\w*)", text)
    if not m or not m.group(1).strip():
        raise KernelSpecError(f"{where}: cannot read parameter {text!r} (expected `type name`)")
    type_part, name = m.group(1), m.group(2)
    pointer = type_part.count("*")
    if pointer > 1:
        raise KernelSpecError(f"{where}: parameter {name!r}: pointers to pointers are not supported ({text!r})")
    before_star = type_part.split("*")[0]
    words = before_star.split()
    const = "const" in words
    base = " ".join(w for w in words if w not in _QUALIFIERS)
    base = {"long long int": "long long", "signed int": "int", "signed": "int"}.get(base, base)
    if base not in SCALAR_CTYPES:
        raise KernelSpecError(f"{where}: parameter {name!r} has type {base!r}: kernels here take float, "
                              f"long long (pointers or values) and int (values)")
    return Param(name=name, ctype=base, pointer=bool(pointer), const=const and bool(pointer), text=text)


def _parse_launch(text: str, where: str) -> tuple[str, str, str]:
    keys = list(_LAUNCH_KEY.finditer(text))
    if not keys or text[:keys[0].start()].strip():
        raise KernelSpecError(f"{where}: malformed launch line {text!r}: expected `grid=... block=... [smem=...]`")
    found = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        key, value = m.group(1), text[m.end():end].strip()
        if key in found:
            raise KernelSpecError(f"{where}: launch line gives {key}= twice")
        if not value:
            raise KernelSpecError(f"{where}: launch line has an empty {key}=")
        found[key] = value
    for key in ("grid", "block"):
        if key not in found:
            raise KernelSpecError(f"{where}: launch line has no {key}= ({text!r})")
    return found["grid"], found["block"], found.get("smem", "0")


def display_name(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def parse(text: str, file: str, stem: str) -> SourceFile:
    """Every launched kernel of one .cu source (KernelSpecError on a malformed structure:
    a launch line not directly above a kernel, a name that resolves to no primitive)."""
    lines = text.splitlines()
    code = _blank_comments(text)
    code_lines = code.splitlines()
    offsets, pos = [], 0
    for ln in code.splitlines(keepends=True):
        offsets.append(pos)
        pos += len(ln)
    constants: dict[str, int] = {}
    pending: tuple[int, str, list] | None = None
    specs, entries, variants_seen = [], [], set()
    for i, raw in enumerate(lines):
        where = f"{file}:{i + 1}"
        if (m := _LAUNCH.match(raw)):
            if pending:
                raise KernelSpecError(f"{file}:{pending[0]}: this // launch: line is not directly above a kernel")
            pending = (i + 1, m.group(1), [], [])
            continue
        if (m := _REQUIRES.match(raw)):
            if not pending:
                raise KernelSpecError(f"{where}: a // requires: line must follow a // launch: line")
            cond, sep, why = m.group(1).partition(" -- ")
            if not sep or not cond.strip() or not why.strip():
                raise KernelSpecError(f"{where}: expected `// requires: <condition> -- <why>`")
            pending[2].append(Requirement(cond.strip(), why.strip()))
            continue
        if (m := _SCRATCH.match(raw)):
            if not pending:
                raise KernelSpecError(f"{where}: a // scratch: line must follow a // launch: line")
            decl, _, what = m.group(1).partition(" -- ")
            d = _SCRATCH_DECL.fullmatch(decl.strip())
            if not d:
                raise KernelSpecError(f"{where}: expected `// scratch: NAME float|int|long long (shape, ...) "
                                      f"[-- what it holds]`, got {m.group(1)!r}")
            pending[3].append(Scratch(d.group(1), " ".join(d.group(2).split()), d.group(3), i + 1, what.strip()))
            continue
        line = code_lines[i] if i < len(code_lines) else ""
        if _EXTERN.match(line):
            name, bounds_text, params_text = _declaration(code, offsets[i], f"{file}:{i + 1}")
            entries.append(name)
            if pending is None:
                continue
            launch_line, launch_text, requires, scratch = pending
            pending = None
            kwhere = f"{file}: {name}"
            hit = catalogue.resolve(stem, name)
            if hit is None:
                prims = ", ".join(p.name for p in catalogue.with_stem(stem)) or "none"
                raise KernelSpecError(f"{kwhere}: a launched kernel must be named <primitive>_<variant> for a "
                                      f"primitive declared with stem {stem!r} ({prims})")
            prim, variant = hit
            variant, sep, step = variant.partition("__")
            if sep and (not variant or not re.fullmatch(r"[A-Za-z0-9]\w*", step) or step.endswith("_")):
                raise KernelSpecError(f"{kwhere}: a step of a variant is named <primitive>_<variant>__<step> "
                                      f"(one `__`, both names non-empty)")
            key = (prim.name, variant)
            if key in variants_seen and not (sep and specs and specs[-1].step and
                                             (specs[-1].primitive, specs[-1].variant) == key):
                if sep and any(s.step for s in specs if (s.primitive, s.variant) == key):
                    raise KernelSpecError(f"{kwhere}: the steps of variant {variant!r} of {prim.name} must be "
                                          f"adjacent in the file (another variant's kernel comes between them)")
                if sep or any(s.step for s in specs if (s.primitive, s.variant) == key):
                    raise KernelSpecError(f"{kwhere}: variant {variant!r} of {prim.name} is launched both as one "
                                          f"kernel and in steps")
                raise KernelSpecError(f"{kwhere}: variant {variant!r} of {prim.name} is launched twice")
            if sep and any(s.step == step for s in specs if (s.primitive, s.variant) == key):
                raise KernelSpecError(f"{kwhere}: step {step!r} of {prim.name}/{variant} is launched twice")
            variants_seen.add(key)
            grid, block, smem = _parse_launch(launch_text, f"{file}:{launch_line}: {name}")
            params = tuple(_parse_param(p, kwhere) for p in _split_commas(params_text))
            bounds = None
            if bounds_text is not None:
                first = _split_commas(bounds_text)[0] if _split_commas(bounds_text) else ""
                bounds = _c_constant(first, constants)
                if bounds is None:
                    raise KernelSpecError(f"{kwhere}: cannot evaluate __launch_bounds__({bounds_text.strip()}) "
                                          f"from the file's integer #defines")
            specs.append(KernelSpec(file=file, source=text, primitive=prim.name, variant=variant, kernel=name,
                                    line=launch_line, grid=grid, block=block, smem=smem, requires=tuple(requires),
                                    params=params, launch_bounds=bounds, constants=dict(constants),
                                    step=step, scratch=tuple(scratch)))
            continue
        if pending is not None:
            raise KernelSpecError(f"{file}:{pending[0]}: the // launch: line must be directly above an "
                                  f'extern "C" __global__ kernel (line {i + 1} is {raw.strip()[:60]!r})')
        if (m := _DEFINE.match(line)):
            if m.group(2):                      # a macro with arguments
                constants.pop(m.group(1), None)
                continue
            value = _c_constant(m.group(3), constants)
            if value is None:
                constants.pop(m.group(1), None)
            else:
                constants[m.group(1)] = value
        elif (m := _UNDEF.match(line)):
            constants.pop(m.group(1), None)
    if pending:
        raise KernelSpecError(f"{file}:{pending[0]}: this // launch: line is not directly above a kernel")
    groups: dict[tuple, list] = {}
    for sp in specs:
        groups.setdefault((sp.primitive, sp.variant), []).append(sp)
    found = tuple(Variant(file=file, source=text, primitive=p, variant=v, steps=tuple(steps))
                  for (p, v), steps in groups.items())
    return SourceFile(path=Path(file), file=file, text=text, specs=tuple(specs), entries=tuple(entries),
                      variants=found)


def _declaration(code: str, start: int, where: str) -> tuple[str, str | None, str]:
    """(name, __launch_bounds__ text or None, parameter text) of the kernel declared at `start`."""
    m = _DECL.search(code, start)
    if not m:
        raise KernelSpecError(f'{where}: expected `extern "C" __global__ void [__launch_bounds__(N)] name(...)`')
    pos, bounds = m.end(), None
    try:
        b = _BOUNDS.match(code, pos)
        if b:
            close = _closing(code, b.end() - 1)
            bounds = code[b.end():close]
            pos = close + 1
        while code[pos].isspace():
            pos += 1
        n = _NAME.match(code, pos)
        if not n:
            raise ValueError
        close = _closing(code, n.end() - 1)
    except (ValueError, IndexError):
        raise KernelSpecError(f'{where}: cannot read the kernel declaration '
                              f'(`extern "C" __global__ void [__launch_bounds__(N)] name(...)`)') from None
    return n.group(1), bounds, code[n.end():close]


# ----------------------------------------------------------------------------- files and lookups

_cache: dict = {}


def source_path(stem: str) -> Path:
    return SOURCE_DIR / f"{stem}.cu"


def source_file(stem: str) -> SourceFile | None:
    """The parsed cuda_impl/<stem>.cu, or None when there is none."""
    path = source_path(stem)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if _cache.get(stem, (None,))[0] != key:
        text = path.read_text(encoding="utf-8")
        _cache[stem] = (key, parse(text, display_name(path), stem))
    return _cache[stem][1]


def kernels_of(stem: str) -> list[KernelSpec]:
    """Every launched kernel (variant or step) of cuda_impl/<stem>.cu, in file order ([] without a file)."""
    src = source_file(stem)
    return list(src.specs) if src else []


def variants_of(stem: str) -> list[Variant]:
    """Every variant of cuda_impl/<stem>.cu (any of its primitives), in file order."""
    src = source_file(stem)
    return list(src.variants) if src else []


def variants(primitive: str) -> list[str]:
    """The primitive's CUDA variant names, naive first; [] when it has no kernels."""
    prim = catalogue.get(primitive)
    return [v.variant for v in variants_of(prim.file_stem) if v.primitive == prim.name]


def spec(primitive: str, variant: str) -> Variant:
    """One variant, every step's signature and launch expressions (and its scratch shapes)
    checked against the declaration (KernelSpecError when they do not fit, KeyError for an
    unknown variant)."""
    prim = catalogue.get(primitive)
    for v in variants_of(prim.file_stem):
        if v.primitive == prim.name and v.variant == variant:
            check(v, prim)
            return v
    valid = ", ".join(variants(primitive)) or "none"
    raise KeyError(f"cuda has no variant {variant!r} of {primitive}; valid: {valid}")


# ----------------------------------------------------------------------------- checking a spec

def _names(spec: KernelSpec, prim: Primitive) -> frozenset:
    clash = set(spec.constants) & (set(prim.dims) | {"sms"} | set(_FUNCTIONS))
    if clash:
        raise KernelSpecError(f"{spec.where}: #define {sorted(clash)[0]} hides a dim or a launch-line name")
    return frozenset({*prim.dims, "sms", *spec.constants})


def _expression(spec: KernelSpec, prim: Primitive, what: str, text: str) -> ast.AST:
    try:
        tree = _parsed(text, _names(spec, prim), False)
    except _Bad as e:
        raise KernelSpecError(f"{spec.where}: {what}={text!r}: {e}") from None
    if isinstance(tree, ast.Tuple) and (what not in ("grid", "block") or not 1 <= len(tree.elts) <= 3):
        raise KernelSpecError(f"{spec.where}: {what}={text!r}: "
                              + ("a tuple needs 1 to 3 entries" if what in ("grid", "block") else "must be one number"))
    return tree


def _shape_expression(spec: KernelSpec, prim: Primitive, sc: Scratch) -> ast.Tuple:
    """A scratch shape `(a, b, ...)` as a tuple of expressions (one entry: `(n)` or `(n,)`)."""
    inner = sc.shape.strip()[1:-1].strip().rstrip(",")
    where = f"{spec.where}: scratch {sc.name!r} shape {sc.shape!r}"
    if not inner:
        raise KernelSpecError(f"{where}: a scratch buffer needs at least one dimension")
    try:
        parts = [_parsed(e, _names(spec, prim), False) for e in _split_commas(inner)]
    except _Bad as e:
        raise KernelSpecError(f"{where}: {e}") from None
    if any(isinstance(t, ast.Tuple) for t in parts):
        raise KernelSpecError(f"{where}: entries must be numbers")
    return ast.Tuple(elts=parts, ctx=ast.Load())


def _as_variant(spec) -> Variant:
    if isinstance(spec, Variant):
        return spec
    return Variant(file=spec.file, source=spec.source, primitive=spec.primitive, variant=spec.variant, steps=(spec,))


def check(spec: Variant | KernelSpec, prim: Primitive | None = None) -> None:
    """A variant's kernels against the declaration: every parameter names a tensor, dim,
    scalar or scratch buffer of the right type; every tensor and scalar is a parameter of
    some step and every output is written by one; `const` says who only reads; launch and
    shape expressions use only the names they may. KernelSpecError names the file, the
    kernel and what is wrong. (A lone KernelSpec is checked as a one-kernel variant.)"""
    v = _as_variant(spec)
    prim = prim or catalogue.get(v.primitive)
    tensors = {t.name: t for t in prim.tensors}
    scalars = {s.name: s for s in prim.scalars}
    scratch: dict[str, Scratch] = {}
    for step in v.steps:
        for sc in step.scratch:
            w = f"{step.where}: scratch {sc.name!r}"
            if sc.name in scratch:
                raise KernelSpecError(f"{w} is declared twice in {prim.name}/{v.variant}")
            if sc.name in tensors or sc.name in scalars or sc.name in prim.dims:
                raise KernelSpecError(f"{w} has the name of a tensor, scalar or dim of {prim.name}")
            if sc.name in step.constants or sc.name == "sms":
                raise KernelSpecError(f"{w} has the name of a #define or a launch-line name")
            scratch[sc.name] = sc
            _shape_expression(step, prim, sc)
    multi = len(v.steps) > 1
    used, written = set(), set()                       # over all steps so far
    for step in v.steps:
        where = step.where
        seen = set()
        for p in step.params:
            pw = f"{where}: parameter {p.name!r}"
            if p.name in seen:
                raise KernelSpecError(f"{pw} appears twice")
            seen.add(p.name)
            if p.pointer and p.name in scratch:
                sc = scratch[p.name]
                if p.ctype != sc.ctype:
                    raise KernelSpecError(f"{pw} is `{p.ctype}*`, but scratch {sc.name!r} is declared "
                                          f"{sc.ctype}: declare it `{sc.ctype}*`")
                if p.const and p.name not in written:
                    raise KernelSpecError(f"{pw}: scratch {sc.name!r} starts undefined: the first step that takes "
                                          f"it must write it (not `const`)")
            elif p.pointer:
                t = tensors.get(p.name)
                if t is None:
                    what = "a dim" if p.name in prim.dims else "a scalar" if p.name in scalars else None
                    raise KernelSpecError(f"{pw} is a pointer, but " + (
                        f"{p.name!r} is {what} of {prim.name}: pass it by value" if what else
                        f"{prim.name} has no tensor {p.name!r} (tensors: {', '.join(tensors)}"
                        + (f"; scratch: {', '.join(scratch)}" if scratch else "") + ")"))
                if POINTER_DTYPES.get(p.ctype) != t.dtype:
                    raise KernelSpecError(f"{pw} is `{p.ctype}*`, but tensor {t.name!r} is {t.dtype}: "
                                          f"declare it `{CTYPE_OF_DTYPE[t.dtype]}*`")
                if t.role == "in" and not p.const:
                    raise KernelSpecError(f"{pw}: tensor {t.name!r} has role 'in': declare it `const` "
                                          f"(the kernel only reads it)")
                if t.role != "in" and p.const and not (multi and p.name in written):
                    raise KernelSpecError(f"{pw}: tensor {t.name!r} has role {t.role!r}: it must not be `const` "
                                          + ("(the kernel writes it)" if not multi else
                                             "here (a step may read an output only after an earlier step wrote it)"))
            elif p.name in tensors or p.name in scratch:
                kind = "tensor" if p.name in tensors else "scratch"
                ctype = CTYPE_OF_DTYPE[tensors[p.name].dtype] if p.name in tensors else scratch[p.name].ctype
                raise KernelSpecError(f"{pw}: {kind} {p.name!r} is passed by value; declare it as a pointer "
                                      f"(`{ctype}*`)")
            elif p.name in prim.dims:
                if p.ctype not in ("int", "long long"):
                    raise KernelSpecError(f"{pw}: dim {p.name!r} must be `int` or `long long`, not `{p.ctype}`")
            elif p.name in scalars:
                s = scalars[p.name]
                if SCALAR_CTYPES[p.ctype] != s.dtype:
                    raise KernelSpecError(f"{pw}: scalar {s.name!r} is {s.dtype}: declare it "
                                          f"`{CTYPE_OF_DTYPE[s.dtype]}`, not `{p.ctype}`")
            else:
                raise KernelSpecError(f"{pw} names no tensor, dim or scalar of {prim.name} (tensors: "
                                      f"{', '.join(tensors)}; dims: {', '.join(prim.dims)}; scalars: "
                                      f"{', '.join(scalars) or 'none'}"
                                      + (f"; scratch: {', '.join(scratch)}" if scratch else "") + ")")
        used |= seen
        written |= {p.name for p in step.params if p.pointer and not p.const}
        _expression(step, prim, "grid", step.grid)
        _expression(step, prim, "block", step.block)
        _expression(step, prim, "smem", step.smem)
        for r in step.requires:
            _expression(step, prim, "requires", r.condition)
    where = v.where
    for name in [*tensors, *scalars]:
        if name not in used:
            kind = "tensor" if name in tensors else "scalar"
            raise KernelSpecError(f"{where}: no parameter for {kind} {name!r} (every tensor and scalar of "
                                  f"{prim.name} must be one, by name" + (", in some step)" if multi else ")"))
    for t in prim.outputs:
        if t.name not in written:
            raise KernelSpecError(f"{where}: no step writes output {t.name!r} (a non-const pointer)")
    for name in scratch:
        if name not in used:
            raise KernelSpecError(f"{where}: scratch {name!r} is declared but no step takes it")


# ----------------------------------------------------------------------------- launching

def _dims_dict(prim: Primitive, dims) -> dict[str, int]:
    if isinstance(dims, dict):
        return {d: int(dims[d]) for d in prim.dims}
    dims = tuple(int(d) for d in dims)
    if len(dims) != len(prim.dims):
        raise ValueError(f"{prim.name}: dims {dims} do not match ({', '.join(prim.dims)})")
    return prim.dims_dict(dims)


def _dim3(value, what: str, spec: KernelSpec) -> tuple[int, int, int]:
    v = value if isinstance(value, tuple) else (value,)
    if any(type(x) is not int for x in v):
        raise KernelSpecError(f"{spec.where}: {what} evaluates to {value!r}, not integers")
    return tuple(v) + (1,) * (3 - len(v))


def _geometry(spec: KernelSpec, prim: Primitive, d: dict, sm_count: int) -> tuple[Launch, dict]:
    env = {**spec.constants, **d, "sms": int(sm_count)}
    out = {}
    for what in ("grid", "block", "smem"):
        tree = _expression(spec, prim, what, getattr(spec, what))
        try:
            out[what] = _evaluate(tree, env, False)
        except _Bad as e:
            raise KernelSpecError(f"{spec.where}: {what}={getattr(spec, what)!r}: {e}") from None
    if type(out["smem"]) is not int:
        raise KernelSpecError(f"{spec.where}: smem evaluates to {out['smem']!r}, not an integer")
    lc = Launch(spec.kernel, _dim3(out["grid"], "grid", spec), _dim3(out["block"], "block", spec), out["smem"])
    return lc, env


def _scratch_shapes(v: Variant, prim: Primitive, d: dict, sm_count: int) -> dict:
    shapes = {}
    for step in v.steps:
        env = {**step.constants, **d, "sms": int(sm_count)}
        for sc in step.scratch:
            try:
                shape = _evaluate(_shape_expression(step, prim, sc), env, False)
            except _Bad as e:
                raise KernelSpecError(f"{step.where}: scratch {sc.name!r} shape {sc.shape!r}: {e}") from None
            if any(type(x) is not int for x in shape):
                raise KernelSpecError(f"{step.where}: scratch {sc.name!r} shape evaluates to {shape!r}, "
                                      f"not integers")
            shapes[sc.name] = (tuple(shape), sc.np_dtype)
    return shapes


def _step_limit(step: KernelSpec, prim: Primitive, d: dict, shapes: dict, sm_count: int,
                multi: bool) -> tuple[str | None, Launch | None]:
    shown = ", ".join(f"{k} = {v}" for k, v in d.items())
    tag = f"step {step.step}: " if multi else ""
    int_dims = [p.name for p in step.params if not p.pointer and p.name in d and p.ctype == "int"]
    if int_dims:
        for name in prim.dims:
            if d[name] > INT32_MAX:
                return (f"{tag}{name} = {d[name]} does not fit in 32 bits, and the kernel takes its sizes as int "
                        f"({', '.join(int_dims)})"), None
        dims = tuple(d[k] for k in prim.dims)
        for p in step.params:
            if not p.pointer:
                continue
            if p.name in shapes:
                count = int(np.prod(shapes[p.name][0], dtype=object))
                what = f"scratch {p.name} {shapes[p.name][0]}"
            else:
                t = prim.tensor(p.name)
                count = int(np.prod(prim.shape_of(t, dims), dtype=object))
                what = f"tensor {t.name} ({' x '.join(map(str, t.shape))})"
            if count > INT32_MAX:
                return (f"{tag}{what} has {count} elements, above 2^31 - 1: the kernel indexes with int"), None
    lc, env = _geometry(step, prim, d, sm_count)
    for r in step.requires:
        try:
            ok = _evaluate(_expression(step, prim, "requires", r.condition), env, False)
        except _Bad as e:
            raise KernelSpecError(f"{step.where}: requires {r.condition!r}: {e}") from None
        if not ok:
            return f"{tag}{r.why} (requires {r.condition}; here {shown})", None
    for axis, g, cap in zip("xyz", lc.grid, MAX_GRID):
        if g < 1:
            return f"{tag}grid.{axis} = {g} for {shown}: a grid needs at least one block per axis", None
        if g > cap:
            return f"{tag}grid.{axis} = {g} is above CUDA's limit of {cap} for these dims ({shown})", None
    for axis, b, cap in zip("xyz", lc.block, MAX_BLOCK):
        if not 1 <= b <= cap:
            return f"{tag}block.{axis} = {b} is outside CUDA's 1..{cap} ({shown})", None
    threads = lc.threads_per_block
    bound = min(MAX_THREADS, step.launch_bounds or MAX_THREADS)
    if threads > bound:
        why = f"its __launch_bounds__({step.launch_bounds})" if step.launch_bounds else "CUDA's limit"
        return f"{tag}a block of {threads} threads is above {why} ({shown})", None
    if threads % WARP:
        return f"{tag}a block of {threads} threads is not a whole number of warps ({shown})", None
    if not 0 <= lc.shared_bytes <= MAX_DYNAMIC_SMEM:
        return (f"{tag}{lc.shared_bytes} bytes of dynamic shared memory: above the 48 KiB a kernel gets "
                f"without opting in"), None
    return None, lc


def _plan(spec, dims, sm_count: int) -> tuple[str | None, Plan | None]:
    v = _as_variant(spec)
    prim = catalogue.get(v.primitive)
    check(v, prim)
    d = _dims_dict(prim, dims)
    shown = ", ".join(f"{k} = {x}" for k, x in d.items())
    if min(d.values()) < 1:
        return f"empty dims ({shown})", None
    shapes = _scratch_shapes(v, prim, d, sm_count)
    for name, (shape, _) in shapes.items():
        if min(shape) < 1:
            return f"scratch {name} would have shape {shape} for {shown}: empty", None
    launches = []
    for step in v.steps:
        why, lc = _step_limit(step, prim, d, shapes, sm_count, len(v.steps) > 1)
        if why:
            return why, None
        launches.append(lc)
    return None, Plan(variant=v, launches=tuple(launches), scratch=shapes)


def limit(spec: Variant | KernelSpec, dims, sm_count: int = DEFAULT_SM_COUNT) -> str | None:
    """Why this variant (every step of it) cannot be launched at these dims (one line), or
    None when it can."""
    return _plan(spec, dims, sm_count)[0]


def plan(spec: Variant | KernelSpec, dims, sm_count: int = DEFAULT_SM_COUNT) -> Plan:
    """Every step's launch and every scratch shape at these dims; ValueError with the reason
    when the variant cannot run there."""
    why, p = _plan(spec, dims, sm_count)
    if why:
        v = _as_variant(spec)
        raise ValueError(f"{v.primitive}/{v.variant}: {why}")
    return p


def launch(spec: Variant | KernelSpec, dims, sm_count: int = DEFAULT_SM_COUNT) -> Launch:
    """The launch of a one-kernel variant at these dims (a variant of several steps: plan());
    ValueError with the reason when it cannot run."""
    v = _as_variant(spec)
    v.only()
    return plan(v, dims, sm_count).launches[0]


def arguments(spec: Variant | KernelSpec, prim: Primitive, tensors: dict, dims, scalars: dict | None = None) -> list:
    """One kernel's arguments in its parameter order: for a pointer, what `tensors` holds
    under that tensor's (or scratch buffer's) name (a device pointer, a numpy array); for a
    dim or a scalar, a numpy scalar of exactly the parameter's C type (np.int32, np.int64,
    np.float32). `spec` is a step, or a one-kernel variant."""
    if isinstance(spec, Variant):
        spec = spec.only()
    d = _dims_dict(prim, dims)
    values = prim.scalar_values(scalars)
    out = []
    for p in spec.params:
        if p.pointer:
            out.append(tensors[p.name])
        else:
            v = d[p.name] if p.name in d else values[p.name]
            cast = NUMPY_OF_CTYPE[p.ctype]
            if p.ctype != "float" and not np.iinfo(cast).min <= int(v) <= np.iinfo(cast).max:
                raise ValueError(f"{spec.where}: {p.name} = {v} does not fit `{p.ctype}`")
            out.append(cast(v))
    return out
