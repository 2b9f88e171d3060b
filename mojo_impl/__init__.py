"""Mojo implementations: one `.mojo` file per primitive, each a Python extension module.

Each file holds all the variants of its primitive as plain Mojo functions on pointers,
naive first, and registers each one under its variant name. Python calls a variant with
the addresses of the input arrays, then of the output, then the sizes:

    add.simd(a, b, y, n)               softmax.fused(x, y, rows, cols)
    relu.simd(x, y, n)                 layernorm.fused(x, gamma, beta, y, rows, cols)
    gelu.simd(x, y, n)                 matmul.tiled(a, b, c, M, K, N)

`python_entry.mojo` holds what the modules share: the conversion from Python ints to
pointers and the GIL release. The modules are built by harness/mojo_build.py into a
cache outside the repository; harness/backends/mojo_backend.py validates every array
before its address is passed.

VARIANTS below is the list the harness runs, in lesson order; tests check that every
module exports exactly these functions.
"""

VARIANTS: dict[str, tuple[str, ...]] = {
    "add": ("scalar", "simd", "parallel"),
    "relu": ("scalar", "simd", "parallel"),
    "gelu": ("scalar", "simd", "parallel"),
    "softmax": ("scalar", "online_simd", "parallel", "fused"),
    "layernorm": ("scalar", "simd", "parallel", "fused"),
    "matmul": ("naive", "reordered", "vectorized", "parallel", "tiled"),
}
