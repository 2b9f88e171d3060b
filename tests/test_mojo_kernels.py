"""Every Mojo variant against the float64 reference: every distribution of its declaration,
the stress ones included (the project's own kernels are held to them), at the odd check
dims and at the declaration's long_check_dims, big enough to take the multi-threaded and
tiled paths (the parallel variants stay on one thread below 2 x MIN_PER_WORKER elements, 0.25-1M).

The variants are the ones each .mojo file registers (read from the source); the first
run compiles the six modules (~5-15 s each on 2 cores), later runs load them from the
build cache.
"""
import numpy as np
import pytest

from harness.backends.base import BackendError
from harness.backends.mojo import args as block_args
from harness.backends.mojo.backend import MojoBackend, exported
from harness.core import catalogue
from harness.core.verify import verify

pytestmark = pytest.mark.mojo

CASES = [(p, v) for p in catalogue.PRIMITIVES for v in MojoBackend().variants(p)]


@pytest.fixture(scope="module")
def backend(mojo_backend):
    return mojo_backend


def case(prim, dims, dist, seed=0):
    inputs = prim.make_inputs(dims, dist, seed)
    for a in inputs.values():
        a.flags.writeable = False                        # as the runner hands them out
    return inputs


def test_every_primitive_of_the_catalogue_has_mojo_variants():
    assert {p for p, _ in CASES} == set(catalogue.PRIMITIVES)


@pytest.mark.parametrize("primitive,variant", CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_variant_matches_reference(backend, primitive, variant):
    prim = catalogue.get(primitive)
    kernel = backend.prepare(primitive, variant)
    scalars = prim.scalar_values()
    failures = []
    for dims in (*prim.check_dims, *prim.long_check_dims):
        for dist in prim.all_distributions:
            inputs = case(prim, dims, dist)
            v = verify(prim, inputs, kernel.bind(inputs, scalars).run(), dims, scalars=scalars)
            if not v.ok:
                failures.append(f"{prim.shape_label(dims)} {dist}: {v.message}")
    assert not failures, f"{primitive}/{variant} is wrong:\n" + "\n".join(failures)


@pytest.mark.parametrize("primitive,variant", CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_repeated_calls_give_the_same_result(backend, primitive, variant):
    """A bound case is called many times while timed: no state may leak between calls
    (accumulating into C, a stale packed buffer). An in-place update (AdamW) is restored
    before each call, so its runs must agree too."""
    prim = catalogue.get(primitive)
    dims = (prim.long_check_dims or prim.check_dims)[0]
    bound = backend.prepare(primitive, variant).bind(case(prim, dims, "normal", seed=1))
    first = {k: v.copy() for k, v in bound.run().items()}
    for _ in range(2):
        if prim.has_inout:
            bound.run()
        else:
            bound.call()
    assert all(np.array_equal(bound.outputs()[k], v) for k, v in first.items())


# Every register tile of the direct kernels and every column edge (AVX-512: panels of 64,
# 32 and 16 columns, full and masked; AVX2: 16 and 8), odd row counts (13: a partial row
# tile), the training step's shapes, and one just past the threshold to the tiled path.
MATMUL_SWEEP = [(13, 7, n) for n in (1, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 96, 130)] + [
    (64, 64, 256), (64, 256, 10), (256, 64, 10), (64, 10, 256), (1, 300, 3), (300, 3, 1), (257, 1025, 257)]


@pytest.mark.parametrize("primitive", ["matmul", "matmul_backward"])
def test_adaptive_matmul_covers_every_tile_and_edge(backend, primitive):
    prim = catalogue.get(primitive)
    kernel = backend.prepare(primitive, "adaptive")
    failures = []
    for dims in MATMUL_SWEEP:
        for dist in ("normal", "positive"):
            inputs = case(prim, dims, dist)
            v = verify(prim, inputs, kernel.bind(inputs).run(), dims)
            if not v.ok:
                failures.append(f"{prim.shape_label(dims)} {dist}: {v.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("variant", MojoBackend().variants("layernorm"))
def test_layernorm_uses_the_eps_it_is_given(backend, variant):
    """eps comes from its slot, not a constant: on small-spread rows it changes the answer."""
    prim = catalogue.get("layernorm")
    kernel = backend.prepare("layernorm", variant)
    dims = (17, 1000)
    inputs = case(prim, dims, "small_spread")
    outs = {}
    for eps in (1e-5, 1e-3):
        scalars = prim.scalar_values({"eps": eps})
        outs[eps] = kernel.bind(inputs, scalars).run()
        v = verify(prim, inputs, outs[eps], dims, scalars=scalars)
        assert v.ok, f"eps={eps}: {v.message}"
    assert not np.allclose(outs[1e-5]["y"], outs[1e-3]["y"], rtol=1e-2)


def test_every_module_exports_exactly_its_registered_variants(backend):
    for stem in catalogue.stems():
        kernels = backend.kernels(stem)
        if not kernels:
            continue
        module = backend.module(stem).module
        listed = {name for entries in kernels.values() for _, name in entries}
        assert exported(module) == listed, f"{stem}.mojo exports {sorted(exported(module))}, " \
                                           f"its add_variant lines register {sorted(listed)}"
        assert callable(module.noop) and callable(module.simd_width)


def test_relu_is_exact_and_output_is_written_in_place(backend):
    prim = catalogue.get("relu")
    inputs = case(prim, ((1 << 20) + 3,), "wide")
    for variant in backend.variants("relu"):
        bound = backend.prepare("relu", variant).bind(inputs)
        out = bound.run()["y"]
        assert out is bound.outputs()["y"]               # the array Mojo wrote into, no copy back
        assert np.array_equal(out, np.maximum(inputs["x"], np.float32(0)))


def test_a_real_kernel_refuses_a_block_packed_for_another_signature(backend):
    """relu's block (x, y | n) given to layernorm and matmul kernels: a count mismatch;
    a block with the right count but a dim where a tensor belongs: a tag mismatch.
    Both raise before the kernel touches memory."""
    relu = catalogue.get("relu")
    arrays = {"x": np.ones(4, np.float32), "y": np.full(4, np.nan, np.float32)}
    block = block_args.pack(relu, arrays, (4,), {})
    layernorm = backend.module("layernorm").module
    with pytest.raises(Exception, match="the kernel takes 7 argument slots, the block holds 3"):
        layernorm.layernorm_fused(block.ctypes.data)
    bad = block.copy()
    bad[2 + 2 * 1] = block_args.INT                      # slot 1 (y) tagged as an integer
    with pytest.raises(Exception, match="argument slot 1 holds an integer, the kernel reads a float32 tensor"):
        backend.module("relu").module.relu_simd(bad.ctypes.data)
    assert np.isnan(arrays["y"]).all()


def test_a_kernel_error_reaches_the_runner_as_one_line(backend):
    """Through a bound case, a slot mismatch is a BackendError that names the kernel."""
    from harness.backends.mojo.backend import MojoKernel, MojoOps
    wrong = backend.module("layernorm").module.layernorm_simd              # the wrong signature
    ops = MojoOps(lambda prim, variant: (wrong, "relu_simd"))
    kernel = MojoKernel(ops, "relu", "simd")
    with pytest.raises(BackendError, match="relu_simd: the kernel takes 7 argument slots, the block holds 3"):
        kernel.bind({"x": np.ones(3, np.float32)}).run()


def test_layernorm_shift_beats_the_numpy_idiom_on_dc_offset_rows(backend):
    """The lesson of layernorm.mojo's header, measured: on rows offset by 1e3-1e4 with
    spreads of 1e-3-1e-1, subtracting a float32 mean (the NumPy idiom) is off by a good
    fraction of the normalised output, while shifting by x0 first stays near float32's
    own rounding."""
    prim = catalogue.get("layernorm")
    dims = (17, 1000)
    inputs = case(prim, dims, "dc_offset")
    ref = prim.reference_outputs(inputs)["y"]
    idiom = np.abs(prim.numpy(**inputs, **prim.scalar_values()) - ref).max()
    assert idiom > 1e-2
    for variant in backend.variants("layernorm"):
        ours = np.abs(backend.prepare("layernorm", variant).bind(inputs).run()["y"] - ref).max()
        assert ours < 1e-5, f"{variant}: max error {ours:.3g} (the NumPy idiom: {idiom:.3g})"


@pytest.mark.parametrize("primitive", ["cross_entropy", "cross_entropy_backward"])
def test_narrow_rows_in_lanes_split_over_threads(backend, primitive):
    """The adaptive variants put rows shorter than a vector into lanes, in blocks split
    over the threads when the batch is large: a partial lane group at the end of a block,
    and classes 1 and 3 (a single column; an odd one)."""
    prim = catalogue.get(primitive)
    kernel = backend.prepare(primitive, "adaptive")
    for dims in ((60001, 10), (180001, 3), (17, 1)):
        for dist in ("normal", "large_offset"):
            inputs = case(prim, dims, dist)
            v = verify(prim, inputs, kernel.bind(inputs).run(), dims)
            assert v.ok, f"{prim.shape_label(dims)} {dist}: {v.message}"


def _threshold(stem: str) -> int:
    """MIN_PARALLEL_FMAS as the .mojo file sets it (comptime MIN_PARALLEL_FMAS = 1 << n)."""
    import re
    from harness.backends.mojo.backend import MojoBackend
    src = (MojoBackend().source(stem)).read_text()
    return 1 << int(re.search(r"comptime MIN_PARALLEL_FMAS = 1 << (\d+)", src).group(1))


# Sizes past each file's one-thread threshold, so that the split over the worker threads
# is verified: C by row blocks and by column panels (odd edges both ways), and the
# attention units of several heads and query blocks.
THREADED = [("matmul", v, d) for v in ("parallel", "tiled", "adaptive") for d in ((257, 1025, 257), (1000, 1100, 65))] + \
    [("matmul_backward", v, d) for v in ("tiled", "adaptive") for d in ((257, 1025, 257), (1000, 1100, 65))] + \
    [("attention", v, (2, 4, 257, 64)) for v in ("parallel", "flash")] + \
    [("attention_backward", "flash", (2, 4, 257, 64)), ("attention_backward", "flash", (2, 5, 300, 40))]


@pytest.mark.parametrize("primitive,variant,dims", THREADED, ids=[f"{p}-{v}-{d}" for p, v, d in THREADED])
def test_the_threaded_paths_match_reference(backend, primitive, variant, dims):
    prim = catalogue.get(primitive)
    if primitive.startswith("matmul"):
        fmas, stem = dims[0] * dims[1] * dims[2], "matmul"
    else:
        b, h, t, d = dims
        fmas, stem = b * h * t * (t + 1) // 2 * d, "attention"
    assert fmas >= _threshold(stem), f"{dims} no longer reaches {stem}'s threaded path"
    kernel = backend.prepare(primitive, variant)
    for dist in prim.all_distributions:
        inputs = case(prim, dims, dist)
        v = verify(prim, inputs, kernel.bind(inputs).run(), dims)
        assert v.ok, f"{prim.shape_label(dims)} {dist}: {v.message}"


SOFTMAXES = [(p, v) for p in ("softmax", "cross_entropy", "cross_entropy_backward")
             for v in MojoBackend().variants(p) if v != "scalar"]


@pytest.mark.parametrize("primitive,variant", SOFTMAXES, ids=[f"{p}-{v}" for p, v in SOFTMAXES])
def test_underflowing_exps_are_exact_zeros_and_nan_stays_nan(backend, primitive, variant):
    """The vector softmaxes take exp through exp_or_zero (python_entry.mojo): Mojo's exp
    gives a denormal for -inf and anything below -87, and denormals are slow on the
    Python thread. A term under e^-80 must still come out exactly 0 (never a denormal,
    never NaN), and a NaN logit must still poison its row rather than vanish."""
    prim = catalogue.get(primitive)
    rows, cols = 3, 37                                    # two full vectors and a masked tail
    x = np.zeros((rows, cols), np.float32)
    x[0, 5] = 200.0                                       # every other term is e^-200
    x[1] = np.linspace(0, -1e4, cols, dtype=np.float32)   # a spread far past the floor
    x[2, 7] = np.nan
    ops = backend.ops()                                   # the op layer: no refusal of NaN inputs
    if primitive == "softmax":
        bufs = {"x": ops.upload(x), "y": ops.empty((rows, cols))}
    else:
        bufs = {"logits": ops.upload(x), "labels": ops.upload(np.array([5, 0, 1], np.int64))}
        bufs.update({"dlogits": ops.empty((rows, cols))} if primitive.endswith("backward")
                    else {"losses": ops.empty((rows,)), "loss": ops.empty(())})
    ops.call(primitive, variant, bufs).run()
    y = ops.download(bufs[{"softmax": "y", "cross_entropy": "losses"}.get(primitive, "dlogits")])
    assert np.isnan(y[2]).all() if y.ndim == 2 else np.isnan(y[2])
    if primitive == "softmax":
        assert y[0, 5] == 1 and (np.delete(y[0], 5) == 0).all()
        assert y[1, 0] == 1 and (y[1, 1:] == 0).all()
    elif primitive == "cross_entropy_backward":
        assert y[0, 5] == 0 and (np.delete(y[0], 5) == 0).all()         # p = 1 at the label: (1 - 1) / 3
        assert (y[1, 1:] == 0).all() and y[1, 0] == 0
    else:
        assert y[0] == 0 and y[1] == 0                    # the label holds all the mass
