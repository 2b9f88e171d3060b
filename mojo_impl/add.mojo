# add: elementwise out = a + b on float32 vectors of length n, and its backward,
# da = db = dout (a residual connection hands its gradient to both branches unchanged).
#
# Variants (naive first), each registered as add_<variant>:
#   scalar    one element per loop step: the direct translation of the Python loop.
#   simd      vectorize[]: F32_WIDTH lanes per step (8 with AVX2, 16 with AVX-512),
#             and vectorize finishes the n % width tail with narrower steps.
#   parallel  simd over chunks, one chunk per worker thread with parallelize[]; inputs
#             under MIN_PER_WORKER elements per thread stay on the calling thread.
#
# What to expect: add does one FLOP per 12 bytes moved, so once it is vectorized memory
# bandwidth sets the speed. Mojo leaves `scalar` scalar (its assembly has one vaddss per
# element: vectorizing is the programmer's job), so `simd` still buys ~1.4x at 16M
# elements. `parallel` buys little more on a small VM, where one core already streams
# ~30 GB/s, most of what the memory system gives two; it pays where one core cannot.
#
# Backward variants, each registered as add_backward_<variant>:
#   scalar    one element per loop step, both copies written in the same step.
#   simd      vectorize[]: one vector load of dout feeds two vector stores, so dout is
#             read once for both outputs (two memcpy calls would read it twice).
#   parallel  simd over chunks, one chunk per worker thread, above MIN_PER_WORKER.
#
# How Python calls them: add_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/add.py): a, b, out | n, and
# dout, da, db | n for the backward. add_call and add_backward_call at the bottom read
# them into the kernels' typed signatures (where `out` is called y: `out` is a Mojo keyword).

from std.algorithm.functional import vectorize
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, new_module

# Starting the worker threads costs 10 us when they are awake and up to ~500 us when
# the VM has parked them (measured on a 2-vCPU VM): each worker gets at least this many
# elements, or the call stays on one thread. Awake workers are what a long training
# step is made of: they fall asleep ~0.1-0.2 ms after their last task, so a run of
# one-thread calls between two matmuls makes the second one pay to wake them. At 1 << 17
# the 10.8M GPT's 1024 x 384 activations are split and its step took 308 ms, against
# 344 ms at 1 << 18 and 1 << 19 (two runs each, alternated, on the 2-core Xeon); the
# default GPT's activations (at most 512 x 256 = 1 << 17) stay on one thread.
comptime MIN_PER_WORKER = 1 << 17


def add_scalar(a: F32Ptr, b: F32Ptr, y: F32Ptr, n: Int):
    for i in range(n):
        y[unsafe_offset=i] = a[unsafe_offset=i] + b[unsafe_offset=i]


def add_simd(a: F32Ptr, b: F32Ptr, y: F32Ptr, n: Int):
    # `width` is a compile-time parameter: vectorize calls body[F32_WIDTH] for the
    # full vectors, then smaller widths for the tail, so no element is read past n.
    def body[width: Int](i: Int) {var}:
        y.unsafe_store[width=width](i, a.unsafe_load[width=width](i) + b.unsafe_load[width=width](i))

    vectorize[F32_WIDTH](n, body)


def add_parallel(a: F32Ptr, b: F32Ptr, y: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        add_simd(a, b, y, n)
        return
    # Chunks are whole multiples of 64 floats (256 B): two threads never write the
    # same cache line, and every chunk but the last is made of full SIMD vectors.
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            add_simd(a.unsafe_offset(start), b.unsafe_offset(start), y.unsafe_offset(start), end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- backward

def add_backward_scalar(dout: F32Ptr, da: F32Ptr, db: F32Ptr, n: Int):
    for i in range(n):
        var g = dout[unsafe_offset=i]
        da[unsafe_offset=i] = g
        db[unsafe_offset=i] = g


def add_backward_simd(dout: F32Ptr, da: F32Ptr, db: F32Ptr, n: Int):
    def body[width: Int](i: Int) {var}:
        var g = dout.unsafe_load[width=width](i)      # one read ...
        da.unsafe_store[width=width](i, g)            # ... two writes
        db.unsafe_store[width=width](i, g)

    vectorize[F32_WIDTH](n, body)


def add_backward_parallel(dout: F32Ptr, da: F32Ptr, db: F32Ptr, n: Int):
    var workers = min(parallelism_level(), max(1, n // MIN_PER_WORKER))
    if workers == 1:
        add_backward_simd(dout, da, db, n)
        return
    var chunk = ((n + workers - 1) // workers + 63) // 64 * 64

    def work(w: Int) {var}:
        var start = w * chunk
        var end = min(n, start + chunk)
        if start < end:
            add_backward_simd(dout.unsafe_offset(start), da.unsafe_offset(start), db.unsafe_offset(start),
                              end - start)

    parallelize(work, workers)


# ----------------------------------------------------------------------------- Python

comptime AddKernel = def(F32Ptr, F32Ptr, F32Ptr, Int) thin -> None


def add_call[kernel: AddKernel](args: Args) raises:
    args.expect(4)                                   # a, b, out | n
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3))


def add_backward_call[kernel: AddKernel](args: Args) raises:
    args.expect(4)                                   # dout, da, db | n
    kernel(args.f32(0), args.f32(1), args.f32(2), args.int(3))


@export
def PyInit_add() abi("C") -> PythonObject:
    try:
        var m = new_module("add")
        add_variant[add_call[add_scalar]](m, "add_scalar")
        add_variant[add_call[add_simd]](m, "add_simd")
        add_variant[add_call[add_parallel]](m, "add_parallel")
        add_variant[add_backward_call[add_backward_scalar]](m, "add_backward_scalar")
        add_variant[add_backward_call[add_backward_simd]](m, "add_backward_simd")
        add_variant[add_backward_call[add_backward_parallel]](m, "add_backward_parallel")
        return m.finalize()
    except e:
        abort(String("error creating the add module: ", e))
