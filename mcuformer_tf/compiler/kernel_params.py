"""ctypes view of libmcuf's parameter structs, its loaded library, and the structs filled from TFLM's Prepare.

The structs mirror mcuf/int8_ops.h and the fused kernels' headers (mcuf/patch_embed.h,
mcuf/attention.h, mcuf/mlp.h). `*_params` fill them from `tflm.arith`'s prepare results, so from
a .tflite exactly as TFLM's Prepare derives them; every precondition the C leaves to its caller
(shift ranges, sizes, buffer types) is checked here and raises McuformerError. `load` declares
every signature on c_library's libmcuf; `int8_buffer`, `output_buffer` and `p8` check and pass
numpy buffers. As in c_library, `sanitize=True` calls the ASan+UBSan build (a process started with
host_runner.sanitizer_env() only).
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from mcuformer_tf.compiler import c_library as mcuf_c
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.elementwise import RSQRT_SHIFT
from mcuformer_tf.tflm.int4 import pack_int4

_i32, _i8 = ctypes.c_int32, ctypes.c_int8
P8, P32 = ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int32)
MCUF_OK = 0
PADDING_VALID = 1  # the tflite schema's Padding.VALID
_SHIFT_RANGE = (-31, 30)  # mcuf_multiply_by_quantized_multiplier's
_RIGHT_SHIFT_RANGE = (-31, 0)  # MultiplyByQuantizedMultiplierSmallerThanOneExp's


def _fields(*names):
    return [(name, _i32) for name in names]


class FcParams(ctypes.Structure):
    _fields_ = _fields("input_offset", "weights_offset", "output_offset", "activation_min", "activation_max",
                       "multiplier", "shift") + [("multipliers", P32), ("shifts", P32), ("weight_bits", _i32)]


class AddParams(ctypes.Structure):
    _fields_ = _fields("left_shift", "input1_offset", "input1_multiplier", "input1_shift", "input2_offset",
                       "input2_multiplier", "input2_shift", "output_offset", "output_multiplier",
                       "output_shift", "activation_min", "activation_max")


class MulParams(ctypes.Structure):
    _fields_ = _fields("input1_offset", "input2_offset", "output_offset", "output_multiplier", "output_shift",
                       "activation_min", "activation_max")


class MeanParams(ctypes.Structure):
    _fields_ = _fields("input_zero_point", "output_zero_point", "multiplier", "shift")


class RsqrtParams(ctypes.Structure):
    _fields_ = _fields("input_zero_point", "output_zero_point", "multiplier", "shift")


class LogisticParams(ctypes.Structure):
    _fields_ = _fields("input_zero_point", "input_range_radius", "input_multiplier", "input_left_shift")


class SoftmaxParams(ctypes.Structure):
    _fields_ = _fields("input_multiplier", "input_left_shift", "diff_min")


class BatchMatmulParams(ctypes.Structure):
    _fields_ = _fields("lhs_offset", "rhs_offset", "output_offset", "multiplier", "shift", "rhs_transposed")


class FcLayer(ctypes.Structure):
    _fields_ = [("params", FcParams), ("weights", P8), ("bias", P32), ("input_depth", _i32),
                ("output_depth", _i32)]


class Linear(ctypes.Structure):
    _fields_ = [("num_layers", _i32), ("layers", FcLayer * 2)]


class LayerNorm(ctypes.Structure):
    _fields_ = [("mean", MeanParams), ("centre", AddParams), ("square", MulParams), ("variance", MeanParams),
                ("add_epsilon", AddParams), ("epsilon", P8), ("rsqrt", RsqrtParams), ("normalize", MulParams),
                ("scale", MulParams), ("gamma", P8), ("offset", AddParams), ("beta", P8)]


class MlpParams(ctypes.Structure):
    _fields_ = [("depth", _i32), ("hidden", _i32), ("ln", LayerNorm),
                ("fc1", Linear),
                ("gelu_scale", MulParams), ("gelu_coefficient", P8), ("gelu_sigmoid", LogisticParams),
                ("gelu_gate", MulParams),
                ("fc2", Linear), ("residual", AddParams)]


class AttentionParams(ctypes.Structure):
    _fields_ = [("tokens", _i32), ("depth", _i32), ("heads", _i32), ("head_dim", _i32), ("ln", LayerNorm),
                ("qkv", Linear), ("scores", BatchMatmulParams), ("softmax", SoftmaxParams),
                ("context", BatchMatmulParams), ("proj", Linear), ("residual", AddParams)]


class PatchEmbedParams(ctypes.Structure):
    _fields_ = [("image_height", _i32), ("image_width", _i32), ("channels", _i32), ("patch", _i32),
                ("depth", _i32), ("conv", FcParams), ("weights", P8), ("bias", P32),
                ("position", AddParams), ("position_table", P8)]


class ParamError(ctypes.Structure):
    """mcuf/params_check.h's mcuf_param_error: the member and field a check refused."""

    _fields_ = [("member", ctypes.c_char_p), ("field", ctypes.c_char_p)]


# The fused kernels' parameter checks, by their params struct.
CHECKS = {MlpParams: "mcuf_mlp_check_params", AttentionParams: "mcuf_attention_check_params",
          PatchEmbedParams: "mcuf_patch_embed_check_params"}


@functools.lru_cache(maxsize=None)
def load(sanitize: bool = False) -> ctypes.CDLL:
    """mcuf_c.load's libmcuf with the int8 primitives' and the fused kernels' signatures declared too."""
    lib = mcuf_c.load(sanitize)
    P, c_int = ctypes.POINTER, ctypes.c_int
    binary = [P8, _i32, P8, _i32, P8, _i32]
    signatures = {
        "mcuf_fully_connected_row": (None, [P(FcParams), P8, _i32, P8, P32, _i32, P8]),
        "mcuf_add_row": (None, [P(AddParams)] + binary),
        "mcuf_sub_row": (None, [P(AddParams)] + binary),
        "mcuf_mul_row": (None, [P(MulParams)] + binary),
        "mcuf_mean_row": (_i8, [P(MeanParams), P8, _i32]),
        "mcuf_rsqrt": (c_int, [P(RsqrtParams), _i8, P8]),
        "mcuf_logistic": (_i8, [P(LogisticParams), _i8]),
        "mcuf_softmax_row": (c_int, [P(SoftmaxParams), P8, _i32, P8]),
        "mcuf_batch_matmul_row": (None, [P(BatchMatmulParams), P8, _i32, P8, _i32, P8]),
        "mcuf_mlp_get_buffer_size": (ctypes.c_size_t, [P(MlpParams)]),
        "mcuf_mlp": (c_int, [P(MlpParams), P8, _i32, P8]),
        "mcuf_attention_get_buffer_size": (ctypes.c_size_t, [P(AttentionParams)]),
        "mcuf_attention": (c_int, [P(AttentionParams), P8, P8]),
        "mcuf_patch_embed_get_buffer_size": (ctypes.c_size_t, [P(PatchEmbedParams)]),
        "mcuf_patch_embed_output_offset": (ctypes.c_ssize_t, [P(PatchEmbedParams)]),
        "mcuf_patch_embed": (c_int, [P(PatchEmbedParams), P8, P8, P8]),
        **{name: (c_int, [P(struct), P(ParamError)]) for struct, name in CHECKS.items()},
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def refused_field(params: ctypes.Structure, sanitize: bool = False) -> str | None:
    """The field of a fused kernel's params struct its C check refuses ("fc1: layer->params.shift"),
    or None when the kernel can run it (mcuf/params_check.h)."""
    error = ParamError()
    if getattr(load(sanitize), CHECKS[type(params)])(ctypes.byref(params), ctypes.byref(error)) == MCUF_OK:
        return None
    field = (error.field or b"?").decode()
    return f"{error.member.decode()}: {field}" if error.member else field


def check_params(params: ctypes.Structure, sanitize: bool = False) -> None:
    """Raises McuformerError naming the kernel (MCUF_MLP, ...) and the field when the C check refuses
    `params`."""
    field = refused_field(params, sanitize)
    if field is not None:
        kernel = CHECKS[type(params)].removesuffix("_check_params").upper()
        raise McuformerError(f"{kernel}: parameter {field} is outside the C kernel's range "
                             "(mcuf/params_check.h)")


# --- parameter structs from tflm_arith's prepare results ----------------------------------------

def _in_range(name: str, value: int, bounds: tuple) -> int:
    low, high = bounds
    if not low <= int(value) <= high:
        raise McuformerError(f"{name}={int(value)} is outside [{low}, {high}], which the C kernel requires")
    return int(value)


def int32_array(values, keep: list):
    array = np.ascontiguousarray(values, np.int32)
    keep.append(array)
    return array.ctypes.data_as(P32)


def fc_params(params, keep: list, weight_bits: int = 8) -> FcParams:
    """FcParams of a FullyConnectedParams (or a CONV_2D's ConvParams, whose weights offset is 0: TFLM's
    ConvPerChannel ignores the weights' zero point): per tensor where every channel has one multiplier
    and shift; weight_bits 4 for a packed INT4 filter (`weights_array`).

    `keep` receives the per-channel arrays the struct points to; keep it alive with the struct.
    """
    multipliers, shifts = np.asarray(params.multipliers), np.asarray(params.shifts)
    for shift in np.unique(shifts):
        _in_range("FULLY_CONNECTED/CONV_2D shift", shift, _SHIFT_RANGE)
    weights_offset = getattr(params, "weights_offset", 0)
    struct = FcParams(params.input_offset, weights_offset, params.output_offset, params.activation_min,
                      params.activation_max, int(multipliers[0]), int(shifts[0]), weight_bits=weight_bits)
    if np.any(multipliers != multipliers[0]) or np.any(shifts != shifts[0]):
        struct.multipliers, struct.shifts = int32_array(multipliers, keep), int32_array(shifts, keep)
    return struct


def weights_array(tensor, keep: list) -> tuple:
    """(pointer, weight bits) of a FULLY_CONNECTED or CONV_2D filter as the C kernels read it: its int8
    values, or for an INT4 tensor its packed bytes (`tflm.int4`, the .tflite's own), bits 4.
    `keep` receives the array the pointer points into."""
    if tensor.int4:
        array, bits = np.frombuffer(pack_int4(tensor.data), np.int8).copy(), 4
    else:
        array, bits = np.ascontiguousarray(tensor.data, np.int8), 8
    keep.append(array)
    return array.ctypes.data_as(P8), bits


def add_params(params, swap: bool = False) -> AddParams:
    """AddParams of ADD, SUB or SQUARED_DIFFERENCE's AddSubParams; `swap` exchanges the inputs (ADD only)."""
    inputs = [(params.input1_offset, params.input1_multiplier, params.input1_shift),
              (params.input2_offset, params.input2_multiplier, params.input2_shift)]
    if swap:
        inputs.reverse()
    for name, value in (("input1_shift", inputs[0][2]), ("input2_shift", inputs[1][2]),
                        ("output_shift", params.output_shift)):
        _in_range(f"ADD/SUB {name}", value, _RIGHT_SHIFT_RANGE)
    _in_range("ADD/SUB left_shift", params.left_shift, (0, 31))
    return AddParams(params.left_shift, *inputs[0], *inputs[1], params.output_offset, params.output_multiplier,
                     params.output_shift, params.activation_min, params.activation_max)


def mul_params(params, swap: bool = False) -> MulParams:
    """MulParams of a tflm_arith MulParams; `swap` exchanges the inputs."""
    offsets = [params.input1_offset, params.input2_offset]
    if swap:
        offsets.reverse()
    return MulParams(*offsets, params.output_offset, params.output_multiplier,
                     _in_range("MUL shift", params.output_shift, _SHIFT_RANGE),
                     params.activation_min, params.activation_max)


def mean_params(params) -> MeanParams:
    return MeanParams(params.input_zero_point, params.output_zero_point, params.multiplier,
                      _in_range("MEAN shift", params.shift, _SHIFT_RANGE))


def rsqrt_params(params) -> RsqrtParams:
    _in_range("RSQRT shift - 20", params.shift - RSQRT_SHIFT, _SHIFT_RANGE)
    return RsqrtParams(params.input_offset, params.output_offset, params.multiplier, params.shift)


def logistic_params(params) -> LogisticParams:
    if params.input_range_radius > 0:  # else every input saturates and the shift is never used
        _in_range("LOGISTIC input_left_shift", params.input_left_shift, _SHIFT_RANGE)
    return LogisticParams(params.input_zero_point, params.input_range_radius, params.input_multiplier,
                          params.input_left_shift)


def softmax_params(params) -> SoftmaxParams:
    return SoftmaxParams(params.input_multiplier, _in_range("SOFTMAX input_left_shift",
                                                            params.input_left_shift, (0, 31)),
                         params.diff_min)


def batch_matmul_params(params) -> BatchMatmulParams:
    if params.adj_x:
        raise McuformerError("BATCH_MATMUL with adj_x has no row kernel: its lhs rows are not contiguous")
    return BatchMatmulParams(params.lhs_offset, params.rhs_offset, params.output_offset, params.multiplier,
                             _in_range("BATCH_MATMUL shift", params.shift, _SHIFT_RANGE), int(params.adj_y))



# --- buffers handed to the C ---------------------------------------------------------------------

def int8_buffer(name: str, array, writable: bool = False) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.int8 or not array.flags.c_contiguous or array.size == 0:
        raise McuformerError(f"{name}: a non-empty C-contiguous int8 array is required, got "
                             f"{array.dtype} {list(array.shape)}")
    if writable and not array.flags.writeable:
        raise McuformerError(f"{name}: the array is read-only")
    return array


def output_buffer(out, size: int) -> np.ndarray:
    if out is None:
        return np.zeros(size, np.int8)
    out = int8_buffer("out", out, writable=True)
    if out.size != size:
        raise McuformerError(f"out: {size} elements are required, got {out.size}")
    return out


def p8(array: np.ndarray):
    return array.ctypes.data_as(P8)


