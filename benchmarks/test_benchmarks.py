"""pytest-benchmark over the same catalogue: every available backend/variant at one mid
size per primitive (small enough that pure Python finishes, large enough to leave the
launch/call overhead behind for NumPy).

    pytest benchmarks --benchmark-only                    # everything available
    pytest benchmarks --benchmark-only -k "matmul and not python" --benchmark-group-by=group

Results are verified before and after benchmarking, as in the harness. Unavailable
backends are skipped with their reason. Not part of `make test`.
"""
import pytest

from harness import backends, catalogue
from harness.verify import verify

MID = {"add": 1 << 18, "relu": 1 << 18, "gelu": 1 << 18, "softmax": 256, "layernorm": 256, "matmul": 128}


def _cases():
    for prim in catalogue.PRIMITIVES:
        for name in backends.names():
            b = backends.get(name)
            avail = b.availability()
            variants = b.variants(prim) if avail.ok else [None]
            for v in variants or [None]:
                reason = None if avail.ok and v else (avail.reason if not avail.ok else f"{name} lacks {prim}")
                yield pytest.param(prim, name, v, reason, id=f"{prim}-{name}-{v or 'unavailable'}")


@pytest.mark.parametrize("prim_name,backend_name,variant,skip_reason", list(_cases()))
def test_benchmark(benchmark, prim_name, backend_name, variant, skip_reason):
    if skip_reason:
        pytest.skip(f"{backend_name}: {skip_reason}")
    prim = catalogue.PRIMITIVES[prim_name]
    dims = prim.dims_for(MID[prim_name])
    inputs = prim.make_inputs(dims, "normal", 0)
    bound = backends.get(backend_name).prepare(prim_name, variant).bind(inputs)
    try:
        before = verify(prim, inputs, bound.run(), dims)
        assert before.ok, before.message
        benchmark.group = f"{prim_name} {prim.shape_label(dims)}"
        benchmark.extra_info.update(flops=prim.flops(dims), bytes=prim.bytes(dims))
        benchmark(bound.call)
        after = verify(prim, inputs, bound.result(), dims)
        assert after.ok, "wrong after benchmarking: " + after.message
    finally:
        bound.close()
