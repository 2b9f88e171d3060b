"""Size ladders and check dims shared by primitives of the same shape, and small helpers.

A ladder size n is one integer, the charts' x axis; each primitive's size_to_dims turns it
into its dims. Check dims are odd, non-square and multiples of no tile (1, 3, 127, 129,
1000, 4097) so that tails, partial tiles and single elements are all exercised.
"""
import numpy as np

F32 = np.float32

ELEMENTWISE_LADDER = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26)
ELEMENTWISE_QUICK = (1 << 10, 1 << 14, 1 << 18, 1 << 20)
ELEMENTWISE_GPU = (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26)
ELEMENTWISE_CHECKS = ((1,), (3,), (4,), (5,), (127,), (129,), (1000,), (4097,))
# Over the Mojo variants' threading threshold (2^19 per worker), odd for the SIMD tails.
ELEMENTWISE_LONG = (((1 << 20) + 3,),)

ROWS_LADDER = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
ROWS_QUICK = (64, 256, 1024)
ROWS_GPU = (256, 1024, 2048, 4096, 8192)
ROWS_CHECKS = ((1, 1), (1, 127), (3, 129), (127, 33), (17, 1000), (2, 4097))
ROWS_LONG = ((300, 4097), (1031, 513))

MATMUL_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)
MATMUL_QUICK = (16, 64, 256, 512)
MATMUL_GPU = (128, 256, 512, 1024, 2048, 4096)
MATMUL_CHECKS = ((1, 1, 1), (1, 129, 127), (127, 1, 33), (64, 64, 64), (129, 127, 131), (33, 1000, 17))
# Split by column panels; by rows (N = 17 is one panel); K longer than one cache block.
MATMUL_LONG = ((257, 513, 129), (1000, 1000, 17), (97, 300, 1001))


def vector(n):
    return (n,)


def square(n):
    return (n, n)


def cube(n):
    return (n, n, n)


def drop_last(y):
    """The output with its last element left as a zeroed buffer holds it: a loop bound one short."""
    y = np.array(y, dtype=F32, copy=True)
    y.reshape(-1)[-1] = 0
    return y


def tail_off_by_one(full, width=4):
    """A vectorised loop of `width` whose scalar tail starts one element late: that element
    keeps what the (zeroed) buffer held. Only n % width != 0 has a tail."""
    y = np.array(full, dtype=F32, copy=True)
    n = y.size
    main = n - n % width
    if main < n:
        y.reshape(-1)[main] = 0
    return y


def upstream_gradient(shape, rng, dims):
    """The gradient flowing into a backward pass: N(0, 1), whatever the distribution of the
    forward's inputs (shared by the backward declarations)."""
    return rng.standard_normal(shape).astype(F32)
