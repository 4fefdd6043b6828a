"""tflm_custom_ops' prepare layer (mcuf/prepare.h) equals tflm_arith's prepare_* field for field.

The C derives each block builtin's parameters from float32 scales and zero points as the TFLM
glue does in Prepare; the reference is what the Python pipeline hands the kernels:
`kernel_params.*_params(tflm.arith prepare_*(graph, op))`, on hypothesis-drawn scales. Where the
Python refuses (McuformerError: TFLM's Prepare fails, or a shift outside the kernels' range), the
C must return MCUF_ERR_ARGUMENT.
"""
import ctypes
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcuformer_tf.compiler import kernel_params as mk
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.conv import prepare_conv_2d
from mcuformer_tf.tflm.arith.elementwise import prepare_add, prepare_mul, prepare_rsqrt, prepare_sub
from mcuformer_tf.tflm.arith.fully_connected import prepare_batch_matmul, prepare_fully_connected
from mcuformer_tf.tflm.arith.logistic import prepare_logistic
from mcuformer_tf.tflm.arith.reduce import prepare_mean
from mcuformer_tf.tflm.arith.softmax import prepare_softmax

MCUF_OK = 0


class Quant(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


@pytest.fixture(scope="module")
def lib():
    lib = mk.load()
    P, i32, c_int = ctypes.POINTER, ctypes.c_int32, ctypes.c_int
    signatures = {
        "mcuf_prepare_fully_connected": [Quant, P(ctypes.c_float), i32, i32, c_int, Quant, i32,
                                         P(i32), P(i32), P(mk.FcParams)],
        "mcuf_prepare_add": [Quant, Quant, Quant, P(mk.AddParams)],
        "mcuf_prepare_mul": [Quant, Quant, Quant, P(mk.MulParams)],
        "mcuf_prepare_mean": [Quant, Quant, P(mk.MeanParams)],
        "mcuf_prepare_rsqrt": [Quant, Quant, P(mk.RsqrtParams)],
        "mcuf_prepare_logistic": [Quant, Quant, P(mk.LogisticParams)],
        "mcuf_prepare_softmax": [ctypes.c_float, Quant, Quant, P(mk.SoftmaxParams)],
        "mcuf_prepare_batch_matmul": [Quant, Quant, Quant, c_int, P(mk.BatchMatmulParams)],
    }
    for name, argtypes in signatures.items():
        getattr(lib, name).restype, getattr(lib, name).argtypes = c_int, argtypes
    return lib


# float32 scales over the range quantised ViTs use, and beyond it
scales = st.floats(2.0**-24, 2.0**8, width=32, allow_subnormal=False)
zero_points = st.integers(-128, 127)
quants = st.tuples(scales, zero_points)


def tensor(index, quant, shape=(1, 4), data=None, channel_scales=None):
    scale_values = np.asarray(channel_scales if channel_scales is not None else [quant[0]], np.float32)
    quantization = SimpleNamespace(scale=scale_values, zero_point=np.full(scale_values.size, quant[1]),
                                   per_channel=scale_values.size > 1)
    return SimpleNamespace(index=index, name=f"t{index}", shape=shape, dtype=np.int8, data=data,
                           quantization=quantization, int4=False)


def graph_op(opcode, tensors, n_inputs, **options):
    graph = SimpleNamespace(tensor=lambda i: tensors[i])
    options.setdefault("fused_activation_function", 0)
    return graph, SimpleNamespace(opcode=opcode, inputs=list(range(n_inputs)),
                                  outputs=[len(tensors) - 1], options=options)


def fields(struct):
    return {name: getattr(struct, name) for name, _ in struct._fields_
            if not name.endswith("s") or name in ("input_offset", "weights_offset", "output_offset")}


def python_or_none(make):
    try:
        return make()
    except McuformerError:
        return None


def check(expected, status, actual):
    if expected is None:
        assert status != MCUF_OK
    else:
        assert status == MCUF_OK
        assert fields(actual) == fields(expected)


def q(pair):
    return Quant(*pair)


@settings(max_examples=300, deadline=None)
@given(a=quants, b=quants, out=quants)
def test_add_sub_mul_batch_matmul_equal_tflm_arith(lib, a, b, out):
    tensors = [tensor(0, a), tensor(1, b), tensor(2, out)]
    for opcode, prepare in (("ADD", prepare_add), ("SUB", prepare_sub)):
        expected = python_or_none(lambda: mk.add_params(prepare(*graph_op(opcode, tensors, 2))))
        actual = mk.AddParams()
        check(expected, lib.mcuf_prepare_add(q(a), q(b), q(out), ctypes.byref(actual)), actual)
    expected = python_or_none(lambda: mk.mul_params(prepare_mul(*graph_op("MUL", tensors, 2))))
    actual = mk.MulParams()
    check(expected, lib.mcuf_prepare_mul(q(a), q(b), q(out), ctypes.byref(actual)), actual)
    for adj_y in (False, True):
        expected = python_or_none(lambda: mk.batch_matmul_params(prepare_batch_matmul(
            *graph_op("BATCH_MATMUL", tensors, 2, adj_x=False, adj_y=adj_y))))
        actual = mk.BatchMatmulParams()
        check(expected, lib.mcuf_prepare_batch_matmul(q(a), q(b), q(out), int(adj_y), ctypes.byref(actual)),
              actual)


@settings(max_examples=300, deadline=None)
@given(x=quants, out=quants, logistic_zp=st.sampled_from([-128, -128, 0]))
def test_mean_rsqrt_logistic_equal_tflm_arith(lib, x, out, logistic_zp):
    axis = SimpleNamespace(index=1, name="axis", shape=(1,), dtype=np.int32, data=np.array([-1]),
                           quantization=None)
    expected = python_or_none(lambda: mk.mean_params(prepare_mean(
        *graph_op("MEAN", [tensor(0, x), axis, tensor(2, out, (1, 1))], 2))))
    actual = mk.MeanParams()
    check(expected, lib.mcuf_prepare_mean(q(x), q(out), ctypes.byref(actual)), actual)
    expected = python_or_none(lambda: mk.rsqrt_params(prepare_rsqrt(
        *graph_op("RSQRT", [tensor(0, x), tensor(1, out)], 1))))
    actual = mk.RsqrtParams()
    check(expected, lib.mcuf_prepare_rsqrt(q(x), q(out), ctypes.byref(actual)), actual)
    sigmoid = (out[0], logistic_zp)
    expected = python_or_none(lambda: mk.logistic_params(prepare_logistic(
        *graph_op("LOGISTIC", [tensor(0, x), tensor(1, sigmoid)], 1))))
    actual = mk.LogisticParams()
    check(expected, lib.mcuf_prepare_logistic(q(x), q(sigmoid), ctypes.byref(actual)), actual)


@settings(max_examples=300, deadline=None)
@given(x=quants, beta=st.sampled_from([1.0, 0.5, 2.0]), exact_output=st.booleans())
def test_softmax_equals_tflm_arith(lib, x, beta, exact_output):
    out = (1 / 256, -128) if exact_output else (1 / 255, -128)
    expected = python_or_none(lambda: mk.softmax_params(prepare_softmax(
        *graph_op("SOFTMAX", [tensor(0, x), tensor(1, out)], 1, beta=beta))))
    actual = mk.SoftmaxParams()
    check(expected, lib.mcuf_prepare_softmax(beta, q(x), q(out), ctypes.byref(actual)), actual)


def fc_fields(struct, depth):
    result = fields(struct)
    if struct.multipliers:
        result["multipliers"] = [struct.multipliers[i] for i in range(depth)]
        result["shifts"] = [struct.shifts[i] for i in range(depth)]
    return result


@settings(max_examples=200, deadline=None)
@given(x=quants, out=quants, w_zp=zero_points, data=st.data(),
       depth=st.integers(1, 6), per_channel=st.booleans(), conv=st.booleans())
def test_fully_connected_and_conv_equal_tflm_arith(lib, x, out, w_zp, data, depth, per_channel, conv):
    n_scales = depth if per_channel and depth > 1 else 1
    w_scales = data.draw(st.lists(scales, min_size=n_scales, max_size=n_scales))
    if conv:  # TFLM's int8 conv: always per channel, weights' zero point ignored
        tensors = [tensor(0, x, (1, 2, 2, 3)), tensor(1, (w_scales[0], 0), (depth, 2, 2, 3),
                                                     channel_scales=w_scales),
                   tensor(2, out, (1, 1, 1, depth))]
        make = lambda: mk.fc_params(prepare_conv_2d(*graph_op(  # noqa: E731
            "CONV_2D", tensors, 2, stride_h=2, stride_w=2, dilation_hfactor=1, dilation_wfactor=1,
            padding=1)), keep)
        c_per_channel, c_zp = 1, 0
    else:
        tensors = [tensor(0, x), tensor(1, (w_scales[0], w_zp), (depth, 4), channel_scales=w_scales),
                   tensor(2, out, (1, depth))]
        make = lambda: mk.fc_params(prepare_fully_connected(  # noqa: E731
            *graph_op("FULLY_CONNECTED", tensors, 2)), keep)
        c_per_channel, c_zp = int(n_scales > 1), w_zp
    keep = []
    expected = python_or_none(make)
    multipliers, shifts = (ctypes.c_int32 * depth)(), (ctypes.c_int32 * depth)()
    actual = mk.FcParams()
    status = lib.mcuf_prepare_fully_connected(
        q(x), (ctypes.c_float * n_scales)(*w_scales), n_scales, c_zp, c_per_channel, q(out), depth,
        multipliers, shifts, ctypes.byref(actual))
    if expected is None:
        assert status != MCUF_OK
    else:
        assert status == MCUF_OK
        assert fc_fields(actual, depth) == fc_fields(expected, depth)
