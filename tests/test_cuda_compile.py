"""NVRTC, with no GPU: every .cu compiles for Hopper and Ampere without spills and within
the launch's resources; the ptxas report is parsed; the CUBIN cache hits and misses when it
should; a broken kernel gives one clear error with the NVRTC line; `harness build` lists
every variant from the specs, checks their signatures and flags kernels never launched."""
from __future__ import annotations

import io
import shutil

import pytest
from rich.console import Console

from harness.backends.cuda import kernels as K
from harness.backends.cuda import nvrtc as cc
from harness.core import catalogue

try:
    NVRTC = cc.nvrtc_version()
    WHY = ""
except cc.NvrtcUnavailable as e:
    NVRTC, WHY = None, str(e)

pytestmark = pytest.mark.skipif(NVRTC is None, reason=f"NVRTC unavailable: {WHY}")

ARCHES = ("sm_90", "sm_80")
REGISTERS_PER_SM = 65536             # sm_80 and sm_90: a block needing more cannot launch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


STEMS = [stem for stem in catalogue.stems() if K.source_file(stem)]


@pytest.fixture(scope="module")
def built():
    """Every .cu compiled for every arch once (fresh, not from any cache)."""
    return {(stem, arch): cc.compile_cubin(K.source_file(stem).text, K.source_file(stem).file, arch, use_cache=False)
            for stem in STEMS for arch in ARCHES}


def _sizes(prim):
    extra = [(2, 32768)] if prim.dims == ("rows", "cols") else []
    return [*prim.check_dims, *prim.long_check_dims, *(prim.size_to_dims(n) for n in prim.gpu_ladder), *extra]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("stem", STEMS)
def test_every_kernel_compiles_without_spills_and_fits_its_launches(built, stem, arch):
    comp = built[(stem, arch)]
    assert comp.cubin[:4] == b"\x7fELF", "a CUBIN is an ELF image"
    for variant in K.variants_of(stem):
        prim = catalogue.get(variant.primitive)
        for step in variant.steps:
            res = comp.resources.get(step.kernel)
            assert res is not None, f"{step.kernel} missing from the ptxas report of {step.file}"
            assert res.registers > 0
            assert (res.spill_stores, res.spill_loads) == (0, 0), f"{step.kernel} spills on {arch}: {res.describe()}"
        for dims in _sizes(prim):
            if K.limit(variant, dims):
                continue
            for step, lc in zip(variant.steps, K.plan(variant, dims).launches):
                res = comp.resources[step.kernel]
                regs = res.registers * lc.threads_per_block
                assert regs <= REGISTERS_PER_SM, f"{step.kernel} at {dims}: {regs} registers per block"
                assert res.smem_bytes + lc.shared_bytes <= 48 * 1024


def test_the_test_primitives_kernel_compiles():
    """tests/test_cuda_demo.py's kernel (int64 pointers, long long and float scalars, a
    64-bit atomicAdd) is real CUDA, not only emulator C++."""
    from tests.test_cuda_demo import DEMO_SOURCE
    comp = cc.compile_cubin(DEMO_SOURCE, "gather_demo.cu", "sm_90", use_cache=False)
    assert comp.resources["gather_demo_naive"].registers > 0


def test_ptxas_report_is_parsed():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k_big' for 'sm_90'
ptxas info    : Function properties for k_big
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 16384 bytes smem
ptxas info    : Compiling entry function 'k_small' for 'sm_90'
ptxas info    : Function properties for k_small
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""
    r = cc.parse_ptxas(log)
    assert r["k_big"] == cc.Resources(registers=255, smem_bytes=16384, stack_bytes=16, spill_stores=8, spill_loads=12)
    assert r["k_small"] == cc.Resources(registers=12)
    assert "SPILLS" in r["k_big"].describe() and "no spills" in r["k_small"].describe()


def test_real_log_reports_shared_memory(built):
    res = built[("matmul", "sm_90")].resources
    assert res["matmul_vectorized"].smem_bytes == 2 * 8 * 128 * 4      # AsT + Bs, 8 x 128 floats each
    assert res["matmul_warptile"].smem_bytes == 2 * 16 * 128 * 4


def test_cache_key_changes_with_every_input():
    base = cc.cache_key("src", ("-lineinfo",), "sm_90", (13, 0))
    assert cc.cache_key("src", ("-lineinfo",), "sm_90", (13, 0)) == base
    others = [cc.cache_key("src2", ("-lineinfo",), "sm_90", (13, 0)),
              cc.cache_key("src", ("-lineinfo", "-G"), "sm_90", (13, 0)),
              cc.cache_key("src", ("-lineinfo",), "sm_80", (13, 0)),
              cc.cache_key("src", ("-lineinfo",), "sm_90", (13, 5))]
    assert len({base, *others}) == 5


def test_cache_is_used_and_lives_outside_the_repo(cache):
    src = K.source_file("relu").text
    first = cc.compile_cubin(src, "cuda_impl/relu.cu", "sm_90")
    assert not first.cached and first.seconds > 0
    files = sorted(p.name for p in cache.iterdir())
    assert files == sorted([f"{first.key}.cubin", f"{first.key}.log"])
    again = cc.compile_cubin(src, "cuda_impl/relu.cu", "sm_90")
    assert again.cached and again.cubin == first.cubin
    assert again.resources == first.resources                 # the log is cached with the CUBIN
    assert again.seconds < first.seconds
    other = cc.compile_cubin(src, "cuda_impl/relu.cu", "sm_80")
    assert not other.cached and other.key != first.key
    edited = cc.compile_cubin(src + "\n// edited\n", "cuda_impl/relu.cu", "sm_90")
    assert not edited.cached
    fresh = cc.compile_cubin(src, "cuda_impl/relu.cu", "sm_90", use_cache=False)
    assert not fresh.cached


def test_default_cache_dir_is_not_in_the_repository(monkeypatch):
    from harness.env import REPO
    monkeypatch.delenv("KR_CACHE_DIR", raising=False)
    assert REPO not in cc.cache_dir().resolve().parents


def test_a_broken_kernel_gives_one_clear_error_with_the_nvrtc_line(cache):
    src = K.source_file("softmax").text.replace("const float inv = 1.0f / s;", "const float inv = 1.0f / total;", 1)
    with pytest.raises(cc.CompileError) as info:
        cc.compile_cubin(src, "cuda_impl/softmax.cu", "sm_90")
    first = str(info.value).splitlines()[0]
    line = 1 + src[:src.index("1.0f / total")].count("\n")
    assert first.startswith(f'cuda_impl/softmax.cu({line}): error: identifier "total" is undefined'), first
    assert "NVRTC" in first and "sm_90" in first
    assert "1 error detected" in str(info.value)                # the whole log follows
    assert not any(cache.glob("*.cubin")) if cache.exists() else True


def test_bad_arch_is_refused_before_nvrtc():
    with pytest.raises(ValueError, match="sm_<major><minor>"):
        cc.compile_cubin("", "x.cu", "90")


def _run_build(monkeypatch, tmp_path, *args, **kw):
    from harness.build import build
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path / "cache"))
    out = io.StringIO()
    code = build(*args, console=Console(file=out, width=200), **kw)
    return code, out.getvalue()


def test_build_prints_one_line_per_kernel(monkeypatch, tmp_path):
    code, text = _run_build(monkeypatch, tmp_path, ["cuda"], arch="sm_80", primitives=["softmax", "matmul"])
    assert code == 0, text
    for p in ("softmax", "matmul"):
        for v in K.variants(p):
            for kernel in K.spec(p, v).kernels:
                line = next(ln for ln in text.splitlines() if f" {kernel} " in ln)
                assert v in line and "ok" in line
    assert "cuda for sm_80" in text and "12 built, 0 failed" in text
    # A variant of several steps: one line per kernel, each naming its step's kernel.
    code, text = _run_build(monkeypatch, tmp_path, ["cuda"], arch="sm_90", primitives=["matmul_backward"])
    assert code == 0, text
    steps = K.spec("matmul_backward", "via_transpose").kernels
    assert len(steps) == 4 and all(any(f" {k} " in ln and "via_transpose" in ln for ln in text.splitlines())
                                   for k in steps)


def _kernel_folder(monkeypatch, tmp_path, **sources):
    """A kernel folder of this test's own: the real relu.cu, and the given stems' sources."""
    folder = tmp_path / "kernels"
    folder.mkdir()
    shutil.copy(K.SOURCE_DIR / "relu.cu", folder / "relu.cu")
    for stem, text in sources.items():
        (folder / f"{stem}.cu").write_text(text)
    monkeypatch.setattr(K, "SOURCE_DIR", folder)


def test_build_fails_with_the_log_on_a_compile_error(monkeypatch, tmp_path):
    add = K.source_file("add").text
    _kernel_folder(monkeypatch, tmp_path, add=add.replace("if (i < n) out[i] = a[i] + b[i];",
                                                          "if (i < n) out[i] = a[i] + c[i];"))
    code, text = _run_build(monkeypatch, tmp_path, ["cuda"], arch="sm_90", primitives=["add", "relu"])
    assert code == 1
    assert 'error: identifier "c" is undefined' in text
    assert "relu_vec4" in text                                 # the other files still build


def test_build_checks_signatures_and_flags_kernels_never_launched(monkeypatch, tmp_path):
    add = K.source_file("add").text
    add = add.replace("add_vec4(const float* __restrict__ a,", "add_vec4(float* __restrict__ a,")
    add += '\nextern "C" __global__ void add_spare(const float* a, float* out, int n) { }\n'
    _kernel_folder(monkeypatch, tmp_path, add=add)
    code, text = _run_build(monkeypatch, tmp_path, ["cuda"], arch="sm_90", primitives=["add", "relu"])
    assert code == 1
    assert "add_vec4: parameter 'a': tensor 'a' has role 'in': declare it `const`" in text
    assert "add_spare: compiled, but no // launch: line makes it a variant" in text
    assert "5 built, 1 failed" in text         # add naive, grid_stride + relu's three


def test_build_reports_a_malformed_file_and_goes_on(monkeypatch, tmp_path):
    add = K.source_file("add").text.replace("// launch: grid=cdiv(n, THREADS) block=THREADS",
                                            "// launch: grid=cdiv(n, THREADS) block=THREADS\n// stray comment", 1)
    _kernel_folder(monkeypatch, tmp_path, add=add)
    code, text = _run_build(monkeypatch, tmp_path, ["cuda"], arch="sm_90", primitives=["add", "relu"])
    assert code == 1 and "must be directly above" in text and "relu_vec4" in text


def test_build_of_a_backend_without_a_compile_step(monkeypatch, tmp_path):
    code, text = _run_build(monkeypatch, tmp_path, ["numpy"], primitives=["add"])
    assert code == 0 and "nothing to build" in text


def test_build_prints_any_backends_build_report(monkeypatch, tmp_path):
    """`build` is generic: a backend with build_report() (the Mojo one) gets the same table
    and exit status."""
    from harness import backends
    from harness.backends.numpy_baseline import NumpyBackend

    class Compiled(NumpyBackend):
        name = "mojo"

        def build_report(self, arch=None, primitives=None):
            return [dict(primitive="add", variant="naive", ok=True, detail="add.mojo built"),
                    dict(primitive="softmax", variant="*", ok=False, detail="softmax.mojo:12:3: error: bad\nlog line")]

    monkeypatch.setitem(backends._instances, "mojo", Compiled())
    code, text = _run_build(monkeypatch, tmp_path, ["mojo"], primitives=["add", "softmax"])
    assert code == 1
    assert "add.mojo built" in text and "softmax.mojo:12:3: error: bad" in text and "log line" in text
