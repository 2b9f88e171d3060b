"""Every Mojo variant against the float64 reference: every applicable distribution, at the
catalogue's odd check sizes and at mid sizes big enough to take the multi-threaded and
tiled paths (the parallel variants stay on one thread below ~0.5M elements).

The first run compiles the six modules (~5-15 s each on 2 cores); later runs load them
from the build cache.
"""
import numpy as np
import pytest

from harness import catalogue
from harness.verify import verify
from mojo_impl import VARIANTS

pytestmark = pytest.mark.mojo

# Sizes over each primitive's threading threshold (MIN_PER_WORKER / MIN_PARALLEL_FMAS in
# the .mojo files), odd so that SIMD tails and edge tiles are exercised too.
MID_DIMS = {
    "add": (((1 << 20) + 3,),),
    "relu": (((1 << 20) + 3,),),
    "gelu": (((1 << 20) + 3,),),
    "softmax": ((300, 4097), (1031, 513)),
    "layernorm": ((300, 4097), (1031, 513)),
    # matmul (M, K, N): split by column panels; by rows (N = 17 is one panel); K > one KC block.
    "matmul": ((257, 513, 129), (1000, 1000, 17), (97, 300, 1001)),
}

CASES = [(p, v) for p, variants in VARIANTS.items() for v in variants]


@pytest.fixture
def backend(mojo_backend):
    return mojo_backend


@pytest.mark.parametrize("primitive,variant", CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_variant_matches_reference(backend, primitive, variant):
    prim = catalogue.PRIMITIVES[primitive]
    kernel = backend.prepare(primitive, variant)
    failures = []
    for dims in (*prim.check_dims, *MID_DIMS[primitive]):
        for dist in prim.distributions:
            inputs = prim.make_inputs(dims, dist, seed=0)
            out = kernel.bind(inputs).run()
            v = verify(prim, inputs, out, dims)
            if not v.ok:
                failures.append(f"{prim.shape_label(dims)} {dist}: {v.message}")
    assert not failures, f"{primitive}/{variant} is wrong:\n" + "\n".join(failures)


@pytest.mark.parametrize("primitive,variant", CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_repeated_calls_give_the_same_result(backend, primitive, variant):
    """A bound case is called many times while timed: no state may leak between calls
    (accumulating into C, a stale packed buffer)."""
    prim = catalogue.PRIMITIVES[primitive]
    dims = MID_DIMS[primitive][0]
    bound = backend.prepare(primitive, variant).bind(prim.make_inputs(dims, "normal", seed=1))
    first = bound.run().copy()
    for _ in range(2):
        bound.call()
    assert np.array_equal(bound.result(), first)


def test_every_module_exports_exactly_its_variants(backend):
    for primitive, variants in VARIANTS.items():
        module = backend.module(primitive).module
        exported = {name for name in dir(module) if not name.startswith("_")} - {"simd_width"}
        assert exported == set(variants), f"{primitive}.mojo registers {sorted(exported)}, " \
                                          f"mojo_impl/__init__.py lists {list(variants)}"


def test_relu_is_exact_and_output_is_written_in_place(backend):
    prim = catalogue.PRIMITIVES["relu"]
    inputs = prim.make_inputs(((1 << 20) + 3,), "wide")
    for variant in VARIANTS["relu"]:
        bound = backend.prepare("relu", variant).bind(inputs)
        out = bound.run()
        assert out is bound.result()                     # the array Mojo wrote into, no copy back
        assert np.array_equal(out, np.maximum(inputs["x"], np.float32(0)))
