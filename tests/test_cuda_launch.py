"""harness/backends/cuda/kernels.py: every kernel of every .cu describes itself (its
`// launch:` line, its `// requires:` and `// scratch:` lines and its signature), and is
checked here at sizes no emulator can run: every variant parses (one kernel, or steps named
`<primitive>_<variant>__<step>`), its parameters bind to its declaration by name, and every
step's launch at every check dims, long check dims and GPU-ladder size stays inside CUDA's
limits and its __launch_bounds__. Refusals carry their reason; malformed sources fail with
one line naming the file, the kernel and the parameter. (The emulator tests prove the
kernels compute the right thing with this same geometry.)"""
from __future__ import annotations

import re

import numpy as np
import pytest

from harness.backends.cuda import kernels as K
from harness.core import catalogue
from harness.core.declaration import Primitive, Tensor, Tolerance

VARIANTS = [pytest.param(v, id=f"{v.primitive}-{v.variant}") for stem in catalogue.stems() for v in K.variants_of(stem)]


def _sizes(prim):
    return [*prim.check_dims, *prim.long_check_dims, *(prim.size_to_dims(n) for n in prim.gpu_ladder)]


def test_every_primitive_with_a_cu_has_variants_naive_first():
    with_cu = [p for p in catalogue.PRIMITIVES.values() if K.source_path(p.file_stem).exists()]
    assert {p.name for p in with_cu} >= {"add", "relu", "gelu", "softmax", "layernorm", "matmul"}
    for p in with_cu:
        names = K.variants(p.name)
        assert names and names[0] in ("naive", "row_per_thread"), names
        assert len(set(names)) == len(names)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_binds_to_its_declaration(variant):
    prim = catalogue.get(variant.primitive)
    K.check(variant, prim)
    again = K.spec(variant.primitive, variant.variant)
    assert (again.file, again.kernels, again.line) == (variant.file, variant.kernels, variant.line)
    names = {p.name for step in variant.steps for p in step.params}
    assert {t.name for t in prim.tensors} | {s.name for s in prim.scalars} <= names
    if len(variant.steps) > 1:
        assert all(step.step for step in variant.steps) and len({s.step for s in variant.steps}) == len(variant.steps)
    # Arguments come out in each kernel's own order, typed exactly as its parameters.
    pointers = {t.name: np.uint64(1000 + i) for i, t in enumerate(prim.tensors)}
    pointers.update({sc.name: np.uint64(2000 + i) for i, sc in enumerate(variant.scratch)})
    for step in variant.steps:
        assert step.launch_bounds, f"{step.kernel} has no __launch_bounds__"
        args = K.arguments(step, prim, pointers, prim.check_dims[-1])
        assert len(args) == len(step.params)
        for p, a in zip(step.params, args):
            assert type(a) is (np.uint64 if p.pointer else K.NUMPY_OF_CTYPE[p.ctype]), (p, a)


@pytest.mark.parametrize("variant", VARIANTS)
def test_launch_is_within_cuda_limits_at_every_size(variant):
    prim = catalogue.get(variant.primitive)
    for dims in _sizes(prim):
        why = K.limit(variant, dims)
        assert why is None, f"{variant.where} refuses {dims}, a size the harness runs: {why}"
        for sms in (1, 132):
            plan = K.plan(variant, dims, sm_count=sms)
            assert [lc.kernel for lc in plan.launches] == list(variant.kernels)
            assert set(plan.scratch) == {sc.name for sc in variant.scratch}
            assert all(min(shape) >= 1 for shape, _ in plan.scratch.values())
            for step, lc in zip(variant.steps, plan.launches):
                assert lc.threads_per_block <= min(K.MAX_THREADS, step.launch_bounds)
                assert lc.threads_per_block % 32 == 0, f"{dims}: block {lc.block} is not whole warps"
                assert all(1 <= g <= cap for g, cap in zip(lc.grid, K.MAX_GRID)), f"{dims}: grid {lc.grid}"
                assert all(1 <= b <= cap for b, cap in zip(lc.block, K.MAX_BLOCK))
                assert 0 <= lc.shared_bytes <= 48 * 1024


def test_launch_geometry_is_what_each_kernel_expects():
    def lc(p, v, dims, sms=132):
        return K.launch(K.spec(p, v), dims, sms)

    assert lc("add", "naive", (1000,)).grid == (4, 1, 1)
    assert lc("add", "grid_stride", (2**24,)).grid == (8 * 132, 1, 1)      # one wave: 8 blocks per SM
    assert lc("add", "grid_stride", (2**24,), sms=1).grid == (8, 1, 1)
    assert lc("relu", "vec4", (4097,)).grid == (5, 1, 1)                 # 1024 elements per block
    assert lc("softmax", "block_shared", (7, 9)).shared_bytes == 256 * 4  # one float per thread
    assert lc("softmax", "warp_online", (17, 9)).grid == (3, 1, 1)       # 8 rows per block
    assert lc("softmax", "block_online", (5, 9)).block == (1024, 1, 1)
    assert lc("matmul", "naive", (100, 3, 40)).grid == (4, 2, 1)         # x walks M: the slow mapping
    assert lc("matmul", "coalesced", (100, 3, 40)).grid == (2, 4, 1)
    assert lc("matmul", "blocktile_1d", (100, 3, 130)).grid == (3, 2, 1)
    assert lc("matmul", "warptile", (300, 3, 129)).block == (128, 1, 1)
    # block_registers sizes its block from the row: 32 values per thread, whole warps, >= 4 warps.
    for p in ("softmax", "layernorm"):
        blocks = {cols: lc(p, "block_registers", (2, cols)).block[0] for cols in (1, 8192, 8193, 4100, 32768)}
        assert blocks == {1: 128, 8192: 256, 8193: 288, 4100: 160, 32768: 1024}


def test_dims_a_kernel_cannot_run_are_refused_with_the_reason():
    def refuse(p, v, dims, match):
        spec = K.spec(p, v)
        why = K.limit(spec, dims)
        assert why and match in why, why
        with pytest.raises(ValueError, match=re.escape(match)):
            K.plan(spec, dims)

    refuse("softmax", "block_registers", (2, 32769), "at most 32768 columns")
    refuse("softmax", "block_registers", (2, 32769), "block_online takes longer rows")
    assert K.limit(K.spec("softmax", "block_online"), (2, 32769)) is None
    refuse("layernorm", "block_registers", (2, 40000), "at most 32768 columns")
    assert K.limit(K.spec("layernorm", "warp_welford"), (2, 40000)) is None
    refuse("add", "vec4", (2**30 + 1,), "2^30")
    assert K.limit(K.spec("add", "vec4"), (2**30,)) is None
    refuse("add", "naive", (2**31,), "does not fit in 32 bits")
    refuse("matmul", "naive", (50000, 50000, 2), "tensor A (M x K) has 2500000000 elements")
    refuse("softmax", "row_per_thread", (2**16, 2**15 + 1), "tensor x (rows x cols)")
    refuse("matmul", "naive", (4, 4, 32 * 65535 + 1), "grid.y = 65536")         # naive puts N on grid.y
    assert K.limit(K.spec("matmul", "coalesced"), (4, 4, 32 * 65535 + 1)) is None
    refuse("add", "naive", (0,), "empty dims")
    # A variant of several steps is refused by the first step that cannot run, named.
    refuse("layernorm_backward", "fused", (2, 8193), "step rows: keeps a row in registers")
    assert K.limit(K.spec("layernorm_backward", "warp_per_row"), (2, 40000)) is None


def test_arguments_are_by_name_and_typed():
    mm = catalogue.get("matmul")
    args = K.arguments(K.spec("matmul", "warptile"), mm, {"A": "a", "B": "b", "C": "c"}, (3, 5, 7))
    assert args == ["a", "b", "c", 3, 7, 5]                         # dims (M, K, N); the kernel takes M, N, K
    assert [type(a) for a in args[3:]] == [np.int32] * 3
    ln = catalogue.get("layernorm")
    spec = K.spec("layernorm", "warp_welford")
    tensors = {"x": 1, "gamma": 2, "beta": 3, "y": 4}
    args = K.arguments(spec, ln, tensors, (2, 9))
    assert args[:4] == [1, 2, 3, 4] and args[4:6] == [2, 9]
    assert type(args[6]) is np.float32 and args[6] == np.float32(1e-5)
    assert K.arguments(spec, ln, tensors, {"rows": 2, "cols": 9}, {"eps": 1e-3})[6] == np.float32(1e-3)


def test_defines_are_read_as_c_integer_constants():
    src = K.source_file("matmul")
    spec = next(s for s in src.specs if s.variant == "vectorized")
    assert spec.constants["T2_THREADS"] == 256 and spec.launch_bounds == 256   # (128 / 8) * (128 / 8)
    sm = next(s for s in K.kernels_of("softmax") if s.variant == "block_registers")
    assert sm.constants["REG_FLOATS"] == 32 and sm.constants["FULL_MASK"] == 0xFFFFFFFF     # 0xffffffffu
    assert "NEG_INF" not in sm.constants                              # (__int_as_float(...)): not an integer
    text = ("#define A 7\n#define B (A / 2)\n#define C (-A / 2)\n#define F 1e-5f\n#define M(x) (x)\n"
            "#define D 4\n#undef D\n" + _kernel("add_naive", "const float* a, const float* b, float* out, int n",
                                                 launch="grid=A + B + C block=32"))
    s = K.parse(text, "t.cu", "add").specs[0]
    assert s.constants == {"A": 7, "B": 3, "C": -3}                  # C truncates toward zero
    assert K.launch(s, (5,)).grid == (7, 1, 1)


# ----------------------------------------------------------------------------- malformed sources

def _kernel(name, params, launch="grid=cdiv(n, 256) block=256", requires=(), bounds="256"):
    lines = [f"// launch: {launch}", *(f"// requires: {r}" for r in requires),
             f'extern "C" __global__ void __launch_bounds__({bounds})', f"{name}({params})", "{ }", ""]
    return "\n".join(lines)


ADD_OK = "const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int n"


def _spec(text, stem="add", file="cuda_impl/add.cu"):
    src = K.parse(text, file, stem)
    assert len(src.specs) == 1
    K.check(src.specs[0])
    return src.specs[0]


def _error(text, *fragments, stem="add"):
    with pytest.raises(K.KernelSpecError) as info:
        _spec(text, stem)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_a_well_formed_synthetic_source_parses():
    s = _spec(_kernel("add_mine", ADD_OK, requires=["n % 4 == 0 -- needs whole float4s"]))
    assert (s.primitive, s.variant, s.kernel, s.launch_bounds) == ("add", "mine", "add_mine", 256)
    assert [p.name for p in s.params] == ["a", "b", "out", "n"]
    assert K.limit(s, (8,)) is None
    assert K.limit(s, (9,)) == "needs whole float4s (requires n % 4 == 0; here n = 9)"


@pytest.mark.parametrize("params,fragments", [
    ("const double* a, const float* b, float* out, int n", ["add_mine", "'a'", "double"]),
    ("const long long* a, const float* b, float* out, int n", ["parameter 'a'", "`long long*`", "float32",
                                                                "declare it `float*`"]),
    ("const float* a, const float* b, const float* out, int n", ["parameter 'out'", "role 'out'",
                                                                  "must not be `const`"]),
    ("float* a, const float* b, float* out, int n", ["parameter 'a'", "role 'in'", "declare it `const`"]),
    ("const float* a, float* out, int n", ["no parameter for tensor 'b'"]),
    ("const float* a, const float* b, float* out, int n, int count", ["parameter 'count'", "names no tensor"]),
    ("const float* a, const float* b, float* out, float n", ["dim 'n' must be `int` or `long long`"]),
    ("const float* a, const float* b, float out, int n", ["tensor 'out' is passed by value"]),
    ("const float* a, const float* b, float* out, int* n", ["parameter 'n' is a pointer", "is a dim"]),
    ("const float* a, const float* b, float* out, int n, int n", ["parameter 'n' appears twice"]),
])
def test_a_signature_that_does_not_fit_the_declaration_is_one_clear_line(params, fragments):
    msg = _error(_kernel("add_mine", params), *fragments)
    assert msg.startswith("cuda_impl/add.cu: add_mine"), msg


def test_scalars_must_match_their_declared_type():
    ln = "const float* x, const float* gamma, const float* beta, float* y, int rows, int cols"
    _spec(_kernel("layernorm_mine", ln + ", float eps", launch="grid=rows block=256"), stem="layernorm")
    _error(_kernel("layernorm_mine", ln + ", int eps", launch="grid=rows block=256"),
           "scalar 'eps' is float32: declare it `float`, not `int`", stem="layernorm")
    _error(_kernel("layernorm_mine", ln, launch="grid=rows block=256"), "no parameter for scalar 'eps'",
           stem="layernorm")


@pytest.mark.parametrize("launch,fragments", [
    ("grid=n / 256 block=256", ["grid='n / 256'", "`/` is float division here: write `//`"]),
    ("grid=cdiv(n, 256) block=256 smem=n * 0.5", ["smem=", "0.5 is not an integer"]),
    ("grid=cdiv(rows, 256) block=256", ["unknown name 'rows'"]),
    ("grid=cdiv(n, 256 block=256", ["not an expression"]),
    ("grid=__import__('os') block=256", ["only cdiv(a, b), min(...) and max(...) may be called"]),
    ("grid=n.real block=256", ["Attribute is not allowed"]),
    ("grid=(1, 2, 3, 4) block=256", ["a tuple needs 1 to 3 entries"]),
    ("grid=((n, 1), 1) block=256", ["a tuple is only allowed as a whole"]),
    ("grid=n ** 2 block=256", ["operator Pow is not allowed"]),
    ("block=256", ["no grid="]),
    ("grid=1 grid=2 block=256", ["gives grid= twice"]),
])
def test_a_bad_launch_expression_is_refused(launch, fragments):
    _error(_kernel("add_mine", ADD_OK, launch=launch), *fragments)


def test_structure_errors_name_the_line():
    body = _kernel("add_mine", ADD_OK)
    _error(body.replace("// launch:", "// launch: grid=1 block=32\n// a comment\n// launch:", 1),
           "cuda_impl/add.cu:1", "must be directly above an extern")
    _error("// requires: n > 1 -- why\n" + body, "cuda_impl/add.cu:1", "must follow a // launch: line")
    _error(_kernel("add_mine", ADD_OK, requires=["n > 1"]), "expected `// requires: <condition> -- <why>`")
    _error(_kernel("softmax_mine", ADD_OK), "softmax_mine", "<primitive>_<variant>", "stem 'add'")
    _error(body + "\n" + body, "variant 'mine' of add is launched twice")
    _error(_kernel("add_mine", ADD_OK, bounds="UNKNOWN_CONSTANT"), "__launch_bounds__(UNKNOWN_CONSTANT)")


def test_a_kernel_without_a_launch_line_is_an_entry_but_not_a_variant():
    text = _kernel("add_mine", ADD_OK) + '\nextern "C" __global__ void add_helper(int n) { }\n'
    src = K.parse(text, "cuda_impl/add.cu", "add")
    assert [s.kernel for s in src.specs] == ["add_mine"] and src.entries == ("add_mine", "add_helper")


def test_limits_and_blocks_are_checked_against_cuda_and_launch_bounds():
    def spec(launch, params=ADD_OK, bounds="256"):
        return _spec(_kernel("add_mine", params, launch=launch, bounds=bounds))

    assert "not a whole number of warps" in K.limit(spec("grid=1 block=48"), (5,))
    assert "above its __launch_bounds__(256)" in K.limit(spec("grid=1 block=512"), (5,))
    assert "block.z = 65" in K.limit(spec("grid=1 block=(1, 1, 65)", bounds="1024"), (5,))
    assert "grid.x = 0" in K.limit(spec("grid=n - 5 block=256"), (5,))
    assert "grid.z = 65536" in K.limit(spec("grid=(1, 1, n) block=256"), (65536,))
    assert "48 KiB" in K.limit(spec("grid=1 block=256 smem=n * 4"), (12289,))
    # long long sizes lift the int32 limits; an int one applies them to every tensor.
    wide = spec("grid=cdiv(n, 1024) block=256", "const float* a, const float* b, float* out, long long n")
    assert K.limit(wide, (2**31 + 1,)) is None
    assert type(K.arguments(wide, catalogue.get("add"), {"a": 0, "b": 0, "out": 0}, (2**31 + 1,))[3]) is np.int64


def test_a_primitive_without_a_cu_file_has_no_cuda_variants(monkeypatch, tmp_path):
    extra = Primitive(
        name="scale_demo", summary="no CUDA version", dims=("n",),
        tensors=(Tensor("x", ("n",)), Tensor("y", ("n",), role="out", tolerance=Tolerance(0.0, 0.0))),
        reference=lambda x: 2 * x, numpy=lambda x: 2 * x, flops=lambda d: d["n"], size_to_dims=lambda n: (n,),
        ladder=(16,), quick_ladder=(16,), gpu_ladder=(16,), check_dims=((3,),), distributions=("normal",))
    monkeypatch.setitem(catalogue.PRIMITIVES, extra.name, extra)
    assert K.source_file("scale_demo") is None
    assert K.kernels_of("scale_demo") == [] and K.variants("scale_demo") == []
    with pytest.raises(KeyError, match="valid: none"):
        K.spec("scale_demo", "naive")
    from harness.backends.cuda.backend import CudaBackend
    b = CudaBackend()
    assert b.variants("scale_demo") == []
    pytest.importorskip("cuda.bindings.nvrtc")
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path))
    rows = b.build_report(arch="sm_90", primitives=["scale_demo", "relu"])
    assert rows[0] == dict(primitive="scale_demo", variant="", ok=True, detail="no CUDA kernels for this primitive")
    assert all(r["ok"] for r in rows) and [r["variant"] for r in rows[1:]] == K.variants("relu")


def test_the_kernel_folder_can_be_pointed_elsewhere(monkeypatch, tmp_path):
    """How the GPU fault check injects a kernel: a folder of its own with a .cu in it."""
    text = (K.SOURCE_DIR / "add.cu").read_text() + "\n" + _kernel("add_extra", ADD_OK)
    (tmp_path / "add.cu").write_text(text)
    monkeypatch.setattr(K, "SOURCE_DIR", tmp_path)
    assert K.variants("add") == ["naive", "grid_stride", "vec4", "extra"]
    assert K.variants("relu") == []
    assert K.spec("add", "extra").file == str(tmp_path / "add.cu")


# ----------------------------------------------------------------------------- steps and scratch

def _step(name, params, launch="grid=cdiv(n, 256) block=256", scratch=(), requires=()):
    lines = [f"// launch: {launch}", *(f"// requires: {r}" for r in requires), *(f"// scratch: {sc}" for sc in scratch),
             'extern "C" __global__ void __launch_bounds__(256)', f"{name}({params})", "{ }", ""]
    return "\n".join(lines)


TWO_STEPS = (_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (n) -- a / 2"])
             + _step("add_two__second", "const float* half, const float* b, float* out, int n",
                     launch="grid=cdiv(n, 128) block=128"))


def _variant(text, stem="add"):
    src = K.parse(text, "cuda_impl/add.cu", stem)
    assert len(src.variants) == 1
    K.check(src.variants[0])
    return src.variants[0]


def _variant_error(text, *fragments):
    with pytest.raises(K.KernelSpecError) as info:
        _variant(text)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_steps_of_a_variant_are_grouped_in_file_order_with_their_scratch():
    src = K.parse(TWO_STEPS + _kernel("add_one", ADD_OK), "cuda_impl/add.cu", "add")
    assert [(v.variant, v.kernels) for v in src.variants] == [("two", ("add_two__first", "add_two__second")),
                                                             ("one", ("add_one",))]
    v = src.variants[0]
    K.check(v)
    assert [s.step for s in v.steps] == ["first", "second"] and v.steps[0].variant == "two"
    assert [(sc.name, sc.ctype, sc.shape, sc.what) for sc in v.scratch] == [("half", "float", "(n)", "a / 2")]
    plan = K.plan(v, (1000,))
    assert [(lc.kernel, lc.grid, lc.block) for lc in plan.launches] == [
        ("add_two__first", (4, 1, 1), (256, 1, 1)), ("add_two__second", (8, 1, 1), (128, 1, 1))]
    assert plan.scratch == {"half": ((1000,), np.float32)} and plan.scratch_bytes == 4000
    # Each step's arguments, by name, from the tensors and the scratch buffers.
    ptrs = {"a": "A", "b": "B", "out": "OUT", "half": "H"}
    assert K.arguments(v.steps[0], catalogue.get("add"), ptrs, (7,)) == ["A", "H", 7]
    assert K.arguments(v.steps[1], catalogue.get("add"), ptrs, (7,)) == ["H", "B", "OUT", 7]
    with pytest.raises(ValueError, match="has 2 steps"):
        K.launch(v, (7,))
    assert src.variants[1].only().kernel == "add_one"


def test_scratch_shapes_are_launch_line_expressions():
    text = ("#define CHUNK 256\n" + _step("add_two__first", "const float* a, float* part, long long* count, int n",
                                           scratch=["part float (cdiv(n, CHUNK), 2) -- per-chunk sums",
                                                    "count long long (1,)"])
            + _step("add_two__second", "const float* part, const long long* count, const float* b, float* out, int n"))
    v = _variant(text)
    assert K.plan(v, (1000,), sm_count=4).scratch == {"part": ((4, 2), np.float32), "count": ((1,), np.int64)}
    assert K.plan(v, (1000,)).scratch_bytes == 4 * 2 * 4 + 8
    # int sizes: the scratch a step takes counts toward the 2^31 limit, like a tensor.
    big = _variant(_step("add_two__first", "const float* a, float* wide, int n", scratch=["wide float (n, 4)"])
                   + _step("add_two__second", "const float* wide, const float* b, float* out, int n"))
    why = K.limit(big, (2**30,))
    assert why == "step first: scratch wide (1073741824, 4) has 4294967296 elements, above 2^31 - 1: " \
                  "the kernel indexes with int", why


def test_a_step_that_cannot_launch_names_itself():
    v = _variant(_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (n)"])
                 + _step("add_two__second", "const float* half, const float* b, float* out, int n",
                         requires=["n % 2 == 0 -- needs pairs"]))
    assert K.limit(v, (4,)) is None
    assert K.limit(v, (5,)) == "step second: needs pairs (requires n % 2 == 0; here n = 5)"
    with pytest.raises(ValueError, match=re.escape("add/two: step second: needs pairs")):
        K.plan(v, (5,))
    empty = _variant(_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (n - 3)"])
                     + _step("add_two__second", "const float* half, const float* b, float* out, int n"))
    assert "scratch half would have shape (0,)" in K.limit(empty, (3,))


@pytest.mark.parametrize("text,fragments", [
    # names and structure
    (_step("add_two__", ADD_OK), ["<primitive>_<variant>__<step>"]),
    (_step("add___x", ADD_OK), ["<primitive>_<variant>__<step>"]),
    (TWO_STEPS.replace("add_two__second", "add_two__first"), ["step 'first' of add/two is launched twice"]),
    (_step("add_two__a", ADD_OK) + _kernel("add_other", ADD_OK) + _step("add_two__b", ADD_OK),
     ["steps of variant 'two' of add must be adjacent"]),
    (_kernel("add_two", ADD_OK) + _step("add_two__b", ADD_OK), ["launched both as one kernel and in steps"]),
    (_step("add_two__b", ADD_OK) + _kernel("add_two", ADD_OK), ["launched both as one kernel and in steps"]),
    # coverage: every tensor, every output written, every scratch used
    (_step("add_two__first", "const float* a, float* out, int n") + _step("add_two__second", "float* out, int n"),
     ["no parameter for tensor 'b'", "in some step"]),
    (_step("add_two__first", "const float* a, const float* b, int n") + _step("add_two__second", "const float* out, int n"),
     ["add_two__second: parameter 'out'", "only after an earlier step wrote it"]),
    (_step("add_two__first", "const float* a, const float* b, float* out, int n", scratch=["spare float (n)"])
     + _step("add_two__second", "float* out, int n"), ["scratch 'spare' is declared but no step takes it"]),
    # scratch: declared once, its own name, its own type, written before it is read
    (_step("add_two__first", "const float* a, const float* half, int n", scratch=["half float (n)"])
     + _step("add_two__second", "const float* b, float* out, int n"),
     ["parameter 'half': scratch 'half' starts undefined", "must write it"]),
    (_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (n)"])
     + _step("add_two__second", "const float* b, float* out, float* half, int n", scratch=["half float (n)"]),
     ["scratch 'half' is declared twice"]),
    (_step("add_two__first", "const float* a, float* b, int n", scratch=["b float (n)"]) + _step("add_two__second", ADD_OK),
     ["scratch 'b' has the name of a tensor"]),
    (_step("add_two__first", "const float* a, long long* half, int n", scratch=["half float (n)"])
     + _step("add_two__second", ADD_OK), ["parameter 'half' is `long long*`", "declared float"]),
    (_step("add_two__first", "const float* a, float half, int n", scratch=["half float (n)"])
     + _step("add_two__second", ADD_OK), ["scratch 'half' is passed by value"]),
    (_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (rows)"])
     + _step("add_two__second", ADD_OK), ["scratch 'half' shape '(rows)'", "unknown name 'rows'"]),
    (_step("add_two__first", "const float* a, float* half, int n", scratch=["half float (n / 2)"])
     + _step("add_two__second", ADD_OK), ["`/` is float division"]),
    (_step("add_two__first", "const float* a, float* half, int n", scratch=["half float ()"])
     + _step("add_two__second", ADD_OK), ["at least one dimension"]),
])
def test_a_variant_of_steps_that_does_not_fit_is_one_clear_line(text, fragments):
    _variant_error(text, *fragments)


@pytest.mark.parametrize("line,fragment", [
    ("// scratch: half double (n)", "expected `// scratch: NAME float|int|long long (shape, ...)"),
    ("// scratch: half float n", "expected `// scratch: NAME"),
])
def test_malformed_scratch_lines_are_refused(line, fragment):
    text = _step("add_mine", ADD_OK).replace("// launch: grid=cdiv(n, 256) block=256",
                                             "// launch: grid=cdiv(n, 256) block=256\n" + line)
    _error(text, fragment)
    _error(line + "\n" + _step("add_mine", ADD_OK), "a // scratch: line must follow a // launch: line")


def test_every_multi_step_variant_in_the_catalogue_is_documented_in_its_file_header():
    """The .cu header lists every variant, steps included: its name appears before the first kernel."""
    for stem in catalogue.stems():
        src = K.source_file(stem)
        if not src:
            continue
        header = src.text[:src.text.index("// launch:")]
        for v in src.variants:
            assert v.variant in header, f"{src.file}: variant {v.variant!r} is not listed in the header"
