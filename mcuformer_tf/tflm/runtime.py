"""Running a .tflite in the stock TFLM wheel, and in the TFLite reference (LiteRT).

The TFLM wheel is the ground truth for unfused models (DESIGN.md §3). Before a
model reaches it, `check_stock_model` says in one McuformerError line what
would stop it: a float tensor where the chain promises int8, or an operator
the wheel's op resolver does not register. TFLM itself reports its errors with
`MicroPrintf` on the process's stderr (fd 2, below Python), so every call into
the wheel captures that output and puts TFLM's own words into the error.
"""
from __future__ import annotations

import ctypes
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mcuformer_tf.errors import McuformerError

# Builtins registered by the wheel's PythonOpsResolver (python/tflite_micro/
# python_ops_resolver.cc, each Add*() mapped to its BuiltinOperator through
# tensorflow/lite/micro/micro_mutable_op_resolver.h).
TFLM_BUILTINS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL
BATCH_TO_SPACE_ND BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION
CONV_2D COS CUMSUM DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV
DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR
FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL
HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG
LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN
MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE
REDUCE_ALL REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR
RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX
SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE
SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())
# Custom ops the same resolver registers by name.
TFLM_CUSTOM_OPS = frozenset("""
CIRCULAR_BUFFER SignalDelay SignalEnergy SignalFftAutoScale SignalFilterBank
SignalFilterBankLog SignalFilterBankSpectralSubtraction SignalFilterBankSquareRoot
SignalFramer SignalIrfft SignalOverlapAdd SignalPCAN SignalRfft SignalStacker
SignalWindow TFLM_DECODE TFLite_Detection_PostProcess
""".split())
MCUF_PREFIX = "MCUF_"
HOST_RUNNER_DOCS = "docs/tflm-host-runner.md"
FLOAT_TYPES = ("float16", "float32", "float64")
# Far above any model of ours; TFLM's arena is `new uint8_t[n]`, so untouched pages cost nothing.
DEFAULT_ARENA = 64 << 20


def has_mcuf_ops(graph) -> bool:
    return any(op.opcode.startswith(MCUF_PREFIX) for op in graph.operators)


def check_int8(graph) -> None:
    """A float tensor at any operator means the model is not the int8 model the chain deploys."""
    for op in graph.operators:
        for role, indices in (("input", op.inputs), ("output", op.outputs)):
            for index in indices:
                tensor = graph.tensors[index] if index >= 0 else None
                if tensor is not None and tensor.dtype.name in FLOAT_TYPES:
                    raise McuformerError(
                        f"operator {op.index} ({op.opcode}) has {tensor.dtype.name} {role} "
                        f"'{tensor.name}': the model is not int8 (convert it fully quantised)")


def check_stock_model(graph, allow_mcuf: bool = False) -> None:
    """Int8 only, and every operator one stock TFLM registers (MCUF ops too if `allow_mcuf`)."""
    check_int8(graph)
    for op in graph.operators:
        if op.is_custom:
            if op.opcode in TFLM_CUSTOM_OPS or (allow_mcuf and op.opcode.startswith(MCUF_PREFIX)):
                continue
            if op.opcode.startswith(MCUF_PREFIX):
                raise McuformerError(
                    f"operator {op.index} is the custom op {op.opcode}: stock TFLM has no kernel "
                    f"for it; fused models run in the host runner (see {HOST_RUNNER_DOCS})")
            raise McuformerError(f"operator {op.index} is the custom op '{op.opcode}': "
                                 "stock TFLM has no kernel for it")
        if op.opcode not in TFLM_BUILTINS:
            raise McuformerError(f"operator {op.index} is the builtin {op.opcode}: "
                                 "stock TFLM has no kernel for it")


@contextmanager
def native_stderr():
    """Capture what C/C++ code writes to fd 2 while the block runs; yields a list filled on exit."""
    captured = []
    libc = ctypes.CDLL(None)
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            libc.fflush(None)
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def tflm_message(log: str) -> str:
    """TFLM's first error line in a captured log, or '' when it printed none."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("[RecordingMicroAllocator]")), "")


def _as_inputs(inputs) -> list:
    return [np.asarray(x) for x in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]


def tflm_interpreter(model_bytes: bytes, arena_size: int):
    """A stock TFLM interpreter that allocated its tensors, or a McuformerError in TFLM's words."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        with native_stderr() as captured:
            interpreter = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena_size)
    except RuntimeError as err:
        detail = tflm_message(captured[0])
        raise McuformerError(f"TFLM: {err}" + (f" ({detail})" if detail else "")) from None
    return interpreter


def _output_count(model_bytes: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0).OutputsLength()


def tflm_invoke(interpreter, inputs, output_count: int) -> list:
    """Set the inputs, invoke, and return the outputs; TFLM's failures as McuformerError."""
    arrays = _as_inputs(inputs)
    try:
        with native_stderr() as captured:
            for i, x in enumerate(arrays):
                interpreter.set_input(x, i)
            interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        detail = tflm_message(captured[0])
        raise McuformerError(f"TFLM: {err}" + (f" ({detail})" if detail else "")) from None
    return [np.array(interpreter.get_output(i)) for i in range(output_count)]


def run_tflm(model_bytes: bytes, inputs, arena_size: int | None = None) -> list:
    """Outputs of the stock TFLM wheel for `inputs` (one array or a list, as the model takes)."""
    model_bytes = bytes(model_bytes)
    interpreter = tflm_interpreter(model_bytes, arena_size or DEFAULT_ARENA)
    return tflm_invoke(interpreter, inputs, _output_count(model_bytes))


def run_litert(model_bytes: bytes, inputs) -> list:
    """Outputs of the TFLite reference kernels (LiteRT, no delegate) for the same inputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        with native_stderr() as captured:
            interpreter = Interpreter(model_content=bytes(model_bytes),
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            interpreter.allocate_tensors()
            for detail, x in zip(interpreter.get_input_details(), _as_inputs(inputs)):
                interpreter.set_tensor(detail["index"], x)
            interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        lines = str(err).strip().splitlines() or captured[0].strip().splitlines()
        raise McuformerError(f"LiteRT: {lines[0] if lines else type(err).__name__}") from None
    return [np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()]


def model_inputs(graph, seed: int = 0, input_file: Path | None = None) -> list:
    """The (integer) model's inputs: from a .npy or raw-bytes file (one input), or seeded random."""
    specs = [graph.tensors[i] for i in graph.inputs]
    if input_file is None:
        rng = np.random.default_rng(seed)
        return [rng.integers(np.iinfo(t.dtype).min, np.iinfo(t.dtype).max, t.shape, t.dtype,
                             endpoint=True) for t in specs]
    if len(specs) != 1:
        raise McuformerError(f"the model has {len(specs)} inputs; --input fills one")
    spec = specs[0]
    path = Path(input_file)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise McuformerError(f"{path}: not a .npy array ({err})") from None
        if array.size != int(np.prod(spec.shape)):
            raise McuformerError(f"{path}: {array.size} values, the input {list(spec.shape)} "
                                 f"needs {int(np.prod(spec.shape))}")
        return [array.astype(spec.dtype).reshape(spec.shape)]
    raw = path.read_bytes()
    if len(raw) != spec.nbytes:
        raise McuformerError(f"{path}: {len(raw)} bytes, the input {list(spec.shape)} "
                             f"{spec.dtype.name} needs {spec.nbytes}")
    return [np.frombuffer(raw, spec.dtype).reshape(spec.shape).copy()]
