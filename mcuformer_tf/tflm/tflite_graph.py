"""A .tflite flatbuffer read into plain Python: tensors, operators, constants, metadata.

Everything that inspects a model (the numpy TFLM executor, the memory report,
the arena search, the compiler) reads it through `read_model`, which checks the
file as it goes, so a malformed, truncated or foreign file ends in one
McuformerError line instead of a traceback deep in flatbuffers.
The schema is the TFLite reference's own (`ai_edge_litert.schema_py_generated`).
An INT4 tensor (TFLM's packed 4-bit weights, `tflm.int4`) reads as int8 values
with `int4` set; its `nbytes` are the packed bytes the file holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.int4 import packed_size, unpack_int4

FILE_IDENTIFIER = b"TFL3"

DTYPES = {
    schema.TensorType.FLOAT32: np.dtype(np.float32),
    schema.TensorType.FLOAT16: np.dtype(np.float16),
    schema.TensorType.INT32: np.dtype(np.int32),
    schema.TensorType.UINT8: np.dtype(np.uint8),
    schema.TensorType.INT64: np.dtype(np.int64),
    schema.TensorType.BOOL: np.dtype(np.bool_),
    schema.TensorType.INT16: np.dtype(np.int16),
    schema.TensorType.INT8: np.dtype(np.int8),
    schema.TensorType.UINT32: np.dtype(np.uint32),
}
INT4 = schema.TensorType.INT4
BUILTIN_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items()
                 if not name.startswith("_")}


@dataclass(frozen=True)
class Quantization:
    """Affine quantisation: real = scale * (q - zero_point), per tensor or along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    quantization: Quantization | None
    data: np.ndarray | None = None  # the constant's values, shaped; None for activations
    is_variable: bool = False
    int4: bool = False  # stored as packed INT4 (dtype is then int8, the values' type)

    @property
    def nbytes(self) -> int:
        count = int(np.prod(self.shape, dtype=np.int64))
        return packed_size(count) if self.int4 else count * self.dtype.itemsize

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    index: int
    opcode: str  # the builtin's name (CONV_2D, …) or, for CUSTOM, its custom code
    inputs: tuple  # tensor indices; -1 marks an omitted optional input
    outputs: tuple
    options: dict = field(default_factory=dict)  # builtin options, snake_case keys
    custom_options: bytes = b""

    @property
    def is_custom(self) -> bool:
        return self.opcode not in BUILTIN_NAMES.values()


@dataclass
class Graph:
    tensors: list
    operators: list
    inputs: tuple
    outputs: tuple
    metadata: dict  # name -> bytes
    size: int  # bytes of the whole file
    buffer_bytes: int  # bytes of constant data (weights, biases, …); a shared buffer counts once

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def consumers(self, tensor_index: int) -> list:
        return [op for op in self.operators if tensor_index in op.inputs]

    def producer(self, tensor_index: int):
        return next((op for op in self.operators if tensor_index in op.outputs), None)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _options(op) -> dict:
    if op.builtinOptions is None:
        return {}
    return {_snake(key): value for key, value in vars(op.builtinOptions).items()}


def _opcode_name(code) -> str:
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return (code.customCode or b"").decode() if isinstance(code.customCode, bytes) \
            else str(code.customCode)
    if builtin not in BUILTIN_NAMES:
        raise McuformerError(f"unknown builtin operator code {builtin}")
    return BUILTIN_NAMES[builtin]


def _buffer_data(model, raw: bytes, index: int) -> bytes | None:
    if not 0 <= index < len(model.buffers or []):
        raise McuformerError(f"tensor refers to buffer {index}, the model has {len(model.buffers or [])}")
    buffer = model.buffers[index]
    if buffer.offset > 1:  # data stored after the flatbuffer (models over 2 GB)
        if buffer.offset + buffer.size > len(raw):
            raise McuformerError(f"buffer {index} lies past the end of the file")
        return raw[buffer.offset:buffer.offset + buffer.size]
    if buffer.data is None or len(buffer.data) == 0:
        return None
    return np.asarray(buffer.data, np.uint8).tobytes()


def _tensor(model, raw: bytes, index: int, t) -> Tensor:
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
    if t.type not in DTYPES and t.type != INT4:
        raise McuformerError(f"tensor {index} ({name}) has an unsupported type {t.type}")
    int4 = t.type == INT4
    dtype = np.dtype(np.int8) if int4 else DTYPES[t.type]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    if any(d < 0 for d in shape):
        raise McuformerError(f"tensor {index} ({name}) has a dynamic shape {list(shape)}")
    quantization = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        scale = np.asarray(q.scale, np.float32)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise McuformerError(f"tensor {index} ({name}) has a scale that is not a positive number")
        zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * scale.size, np.int64)
        if zero_point.size != scale.size:
            raise McuformerError(f"tensor {index} ({name}) has {scale.size} scales but "
                                 f"{zero_point.size} zero points")
        quantization = Quantization(scale, zero_point, int(q.quantizedDimension))
    data = _buffer_data(model, raw, t.buffer)
    array = None
    if data is not None:
        count = int(np.prod(shape, dtype=np.int64))
        need = packed_size(count) if int4 else count * dtype.itemsize
        if len(data) != need:
            raise McuformerError(f"tensor {index} ({name}) holds {len(data)} bytes, its shape "
                                 f"{list(shape)} needs {need}")
        array = unpack_int4(data, shape) if int4 else np.frombuffer(data, dtype).reshape(shape)
    return Tensor(index, name, shape, dtype, quantization, array, bool(t.isVariable), int4)


def _check_indices(op_index, indices, count, what):
    for i in indices:
        if not -1 <= i < count:
            raise McuformerError(f"operator {op_index} names {what} tensor {i}, the graph has {count}")


def _parse(raw: bytes) -> Graph:
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    if not model.subgraphs:
        raise McuformerError("the model has no subgraph")
    if len(model.subgraphs) > 1:
        raise McuformerError(f"the model has {len(model.subgraphs)} subgraphs; one is supported")
    sub = model.subgraphs[0]
    tensors = [_tensor(model, raw, i, t) for i, t in enumerate(sub.tensors or [])]
    codes = [_opcode_name(c) for c in (model.operatorCodes or [])]
    operators = []
    for i, op in enumerate(sub.operators or []):
        if not 0 <= op.opcodeIndex < len(codes):
            raise McuformerError(f"operator {i} has opcode index {op.opcodeIndex}, the model has {len(codes)}")
        inputs = tuple(int(x) for x in (op.inputs if op.inputs is not None else ()))
        outputs = tuple(int(x) for x in (op.outputs if op.outputs is not None else ()))
        _check_indices(i, inputs, len(tensors), "input")
        _check_indices(i, outputs, len(tensors), "output")
        custom = bytes(np.asarray(op.customOptions, np.uint8)) if op.customOptions is not None else b""
        operators.append(Operator(i, codes[op.opcodeIndex], inputs, outputs, _options(op), custom))
    graph_inputs = tuple(int(x) for x in (sub.inputs if sub.inputs is not None else ()))
    graph_outputs = tuple(int(x) for x in (sub.outputs if sub.outputs is not None else ()))
    _check_indices("of the graph", graph_inputs + graph_outputs, len(tensors), "an i/o")
    metadata = {}
    for entry in model.metadata or []:
        name = entry.name.decode(errors="replace") if isinstance(entry.name, bytes) else str(entry.name)
        metadata[name] = _buffer_data(model, raw, entry.buffer) or b""
    shared = {t_schema.buffer: t.nbytes for t, t_schema in zip(tensors, sub.tensors or [])
              if t.is_constant}  # the converter gives equal constants one buffer
    buffer_bytes = sum(shared.values())
    return Graph(tensors, operators, graph_inputs, graph_outputs, metadata, len(raw), buffer_bytes)


def read_model(source) -> Graph:
    """Read a .tflite (a path or its bytes); any defect ends in one McuformerError line."""
    label = str(source) if isinstance(source, (str, Path)) else "model"
    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    if len(raw) < 8 or raw[4:8] != FILE_IDENTIFIER:
        raise McuformerError(f"{label}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        return _parse(raw)
    except McuformerError as err:
        raise McuformerError(f"{label}: {err}") from None
    except Exception as err:  # flatbuffers reports truncation and bad offsets by any exception
        raise McuformerError(f"{label}: malformed TFLite flatbuffer ({type(err).__name__}: {err})") \
            from None
