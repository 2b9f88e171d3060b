"""Mojo implementations: one `.mojo` file per primitive stem, each a Python extension module.

Each file holds all the variants of its primitive as plain Mojo functions on typed
pointers and sizes, naive first, each named `<primitive>_<variant>` and registered under
that name by one `add_variant[...](m, "<primitive>_<variant>")` line. The harness reads
those lines to list the variants (no compiler needed), and checks that the built module
exports exactly them.

Every kernel is called from Python the same way, with one int: the address of an
argument block (harness/backends/mojo/args.py) holding every tensor's address, then the
dims, then the typed scalars, in the declaration's order (harness/primitives/<stem>.py):

    relu_simd(block)          x, y | n
    layernorm_fused(block)    x, gamma, beta, y | rows, cols | eps
    matmul_tiled(block)       A, B, C | M, K, N

`python_entry.mojo` holds what the modules share: the block reader (struct Args, whose
accessors check every slot's tag), the one entry that releases the GIL, and the
`simd_width` and `noop` functions of every module. The modules are built by
harness/backends/mojo/build.py into a cache outside the repository; the backend validates
every array before any address goes into a block.
"""
