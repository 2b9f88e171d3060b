# probe: a test-only Mojo module (tests/test_mojo_probe.py) that proves the argument
# block's typed slots end to end, through the real accessors of python_entry.mojo:
# float32 and int64 tensors of every role, an int dim, an int64 and an int32 scalar and a
# float32 scalar. Its primitive is declared by the test, never by the catalogue:
#
#     probe: x (n) in, idx (n) int64 in, y (n) out, shifted (n) int64 out, acc (n) inout
#            | n | alpha float32, k int64, m int32
#     y = alpha * x[idx] + m,   shifted = idx + k,   acc += y
#
# The test builds it beside a copy of mojo_impl/python_entry.mojo. The other "variants"
# read the block the wrong way on purpose: each must raise a clear Python exception
# before any pointer is used.

from std.os import abort
from std.python import PythonObject

from python_entry import Args, F32Ptr, I64Ptr, add_variant, new_module


def probe_gather(
    x: F32Ptr, idx: I64Ptr, y: F32Ptr, shifted: I64Ptr, acc: F32Ptr, n: Int, alpha: Float32, k: Int, m: Int
):
    for i in range(n):
        var j = Int(idx[unsafe_offset=i])
        var v = alpha * x[unsafe_offset=j] + Float32(m)
        y[unsafe_offset=i] = v
        shifted[unsafe_offset=i] = idx[unsafe_offset=i] + Int64(k)
        acc[unsafe_offset=i] = acc[unsafe_offset=i] + v


comptime ProbeKernel = def(F32Ptr, I64Ptr, F32Ptr, I64Ptr, F32Ptr, Int, Float32, Int, Int) thin -> None


def probe_call[kernel: ProbeKernel](args: Args) raises:
    args.expect(9)                                   # x, idx, y, shifted, acc | n | alpha, k, m
    kernel(args.f32(0), args.i64(1), args.f32(2), args.i64(3), args.f32(4), args.int(5),
           args.float32(6), args.int(7), args.int(8))


def probe_wrong_tag(args: Args) raises:
    args.expect(9)
    _ = args.f32(1)                                  # idx is an int64 tensor


def probe_wrong_scalar(args: Args) raises:
    args.expect(9)
    _ = args.int(6)                                  # alpha is a float32 scalar


def probe_wrong_count(args: Args) raises:
    args.expect(8)


def probe_past_the_end(args: Args) raises:
    _ = args.int(9)                                  # slots 0..8 only


@export
def PyInit_probe() abi("C") -> PythonObject:
    try:
        var m = new_module("probe")
        add_variant[probe_call[probe_gather]](m, "probe_gather")
        add_variant[probe_wrong_tag](m, "probe_wrong_tag")
        add_variant[probe_wrong_scalar](m, "probe_wrong_scalar")
        add_variant[probe_wrong_count](m, "probe_wrong_count")
        add_variant[probe_past_the_end](m, "probe_past_the_end")
        return m.finalize()
    except e:
        abort(String("error creating the probe module: ", e))
