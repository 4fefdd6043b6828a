"""The compiler's IR: a one-subgraph .tflite as mutable Python objects, and back to bytes.

Operators refer to their tensors, and constant tensors to their buffers, as
objects, so a pass rewires, removes or adds operators without renumbering
anything. Tensor and buffer indices exist only in the file: `write` numbers
the tensors every operator, graph input/output or signature still refers to,
in the order of `Model.tensors` (tensors a pass created and referred to come
last), drops the rest and every buffer no kept tensor holds, and packs the
model with the TFLite schema's object API (`ai_edge_litert.schema_py_generated`,
file identifier "TFL3"), every constant 16-byte aligned as TFLite's converter
aligns them. `Model.prune` applies that numbering to the IR itself, so a pass
that writes tensor indices into the model (the offline memory plan) sees the
indices the file will have.

Reading goes through `tflite_graph.read_model`, which checks the file; what
the IR cannot carry (sparse tensors, intermediates, builtin options 2, custom
quantisation, external buffers) is refused rather than dropped. Float min/max
ranges of quantisation parameters, which no int8 TFLM kernel reads, are not
kept. A packed INT4 constant (`int4` set, dtype int8) keeps its packed bytes in
its buffer; `data` unpacks them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.int4 import pack_int4, packed_size, unpack_int4
from mcuformer_tf.tflm.tflite_graph import BUILTIN_NAMES, DTYPES, FILE_IDENTIFIER, INT4, Quantization, read_model

BUFFER_ALIGNMENT = 16  # the schema's `force_align: 16` on Buffer.data
_BUILTIN_CODES = {name: code for code, name in BUILTIN_NAMES.items()}
_TENSOR_TYPES = {dtype: code for code, dtype in DTYPES.items()}


@dataclass(eq=False)
class Buffer:
    """A constant's bytes; several tensors may share one."""

    data: bytes


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple
    dtype: np.dtype
    quantization: Quantization | None = None
    buffer: Buffer | None = None  # None for activations (inputs, outputs, intermediates)
    is_variable: bool = False
    int4: bool = False  # the buffer holds packed INT4 values (dtype int8, the values' type)

    @property
    def data(self) -> np.ndarray | None:
        """The constant's values, shaped (read-only); None for an activation."""
        if self.buffer is None:
            return None
        if self.int4:
            return unpack_int4(self.buffer.data, self.shape)
        return np.frombuffer(self.buffer.data, self.dtype).reshape(self.shape)

    @property
    def is_constant(self) -> bool:
        return self.buffer is not None

    @property
    def nbytes(self) -> int:
        count = int(np.prod(self.shape, dtype=np.int64))
        return packed_size(count) if self.int4 else count * self.dtype.itemsize


@dataclass(eq=False)
class Op:
    opcode: str  # the builtin's name (CONV_2D, …) or, for a CUSTOM op, its custom code
    inputs: list  # Tensors; None marks an omitted optional input
    outputs: list
    options_type: int = schema.BuiltinOptions.NONE
    options: object = None  # the schema's options object (FullyConnectedOptionsT, …) or None
    custom_options: bytes = b""
    version: int = 1  # the operator code's version
    # Outputs that share their arena memory with an input (output position -> input position),
    # for the offline memory plan; a pass that fuses an in-place kernel sets it. The output sits
    # at the input's offset plus its `in_place_offset` (bytes, a multiple of 16; 0 if absent).
    in_place: dict = field(default_factory=dict)
    in_place_offset: dict = field(default_factory=dict)

    @classmethod
    def custom(cls, code: str, inputs, outputs, options: bytes) -> Op:
        """A CUSTOM operator with `code` as its custom code and `options` as its custom options."""
        return cls(code, list(inputs), list(outputs), custom_options=bytes(options))

    @property
    def is_custom(self) -> bool:
        return self.opcode not in _BUILTIN_CODES

    def option(self, name: str):
        """A builtin option by its snake_case schema name (keep_num_dims, …); None if absent."""
        first, *rest = name.split("_")
        return getattr(self.options, first + "".join(part.title() for part in rest), None)


@dataclass(eq=False)
class Signature:
    key: str
    inputs: list  # (name, Tensor) pairs
    outputs: list


@dataclass(eq=False)
class Model:
    tensors: list
    operators: list
    inputs: list
    outputs: list
    metadata: dict = field(default_factory=dict)  # name -> bytes, in file order
    signatures: list = field(default_factory=list)
    description: str = ""
    subgraph_name: str = ""

    def consumers(self) -> dict:
        """Tensor -> the operators that read it, in graph order (an operator once per tensor)."""
        readers = {}
        for op in self.operators:
            for t in dict.fromkeys(t for t in op.inputs if t is not None):
                readers.setdefault(t, []).append(op)
        return readers

    def live_tensors(self) -> list:
        """The tensors `write` keeps, in the order it numbers them."""
        referred = [t for op in self.operators for t in op.inputs + op.outputs if t is not None]
        referred += self.inputs + self.outputs
        referred += [t for s in self.signatures for _, t in s.inputs + s.outputs]
        live, listed = dict.fromkeys(referred), set(self.tensors)
        return [t for t in self.tensors if t in live] + [t for t in live if t not in listed]

    def prune(self) -> None:
        """Drop unreferenced tensors and number the rest as `write` will."""
        self.tensors = self.live_tensors()

    def replace_ops(self, old, new) -> None:
        """Remove the operators `old` and put `new` where the first of them was."""
        position = min(self.operators.index(op) for op in old)
        removed = set(old)
        kept = [op for op in self.operators if op not in removed]
        self.operators = kept[:position] + list(new) + kept[position:]


def _refusal(model_t) -> str | None:
    """What in the file the IR cannot carry, or None."""
    if any(b.offset > 1 for b in model_t.buffers or []):
        return "buffers stored outside the flatbuffer"
    sub = model_t.subgraphs[0]
    for i, t in enumerate(sub.tensors or []):
        if t.sparsity is not None or t.variantTensors:
            return f"tensor {i} is sparse or a variant"
        if t.quantization is not None and t.quantization.detailsType != 0:
            return f"tensor {i} has custom quantisation details"
    for i, op in enumerate(sub.operators or []):
        if op.builtinOptions2 is not None or (op.intermediates is not None
                                               and len(op.intermediates)):
            return f"operator {i} has intermediates or builtin options 2"
        if op.largeCustomOptionsSize:
            return f"operator {i} stores its custom options outside the flatbuffer"
        if op.mutatingVariableInputs is not None and any(op.mutatingVariableInputs):
            return f"operator {i} mutates variable inputs"
    return None


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def read(source) -> Model:
    """The IR of a .tflite (a path or its bytes); a file it cannot carry ends in McuformerError."""
    graph = read_model(source)
    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    model_t = schema.ModelT.InitFromPackedBuf(raw, 0)
    refusal = _refusal(model_t)
    if refusal:
        raise McuformerError(f"the compiler cannot carry this model: {refusal}")
    sub = model_t.subgraphs[0]
    buffers, tensors = {}, []
    for t, t_schema in zip(graph.tensors, sub.tensors or []):
        buffer = None
        if t.is_constant:
            buffer = buffers.setdefault(t_schema.buffer,
                                        Buffer(pack_int4(t.data) if t.int4 else t.data.tobytes()))
        tensors.append(Tensor(t.name, t.shape, t.dtype, t.quantization, buffer, t.is_variable, t.int4))

    def at(indices):
        return [tensors[i] if i >= 0 else None for i in indices]

    operators = []
    for op, op_schema in zip(graph.operators, sub.operators or []):
        operators.append(Op(op.opcode, at(op.inputs), at(op.outputs), op_schema.builtinOptionsType,
                            op_schema.builtinOptions, op.custom_options,
                            model_t.operatorCodes[op_schema.opcodeIndex].version))
    signatures = [Signature(_text(s.signatureKey),
                            [(_text(m.name), tensors[m.tensorIndex]) for m in s.inputs or []],
                            [(_text(m.name), tensors[m.tensorIndex]) for m in s.outputs or []])
                  for s in model_t.signatureDefs or []]
    return Model(tensors, operators, at(graph.inputs), at(graph.outputs), dict(graph.metadata),
                 signatures, _text(model_t.description), _text(sub.name))


class _AlignedBufferT(schema.BufferT):
    """A Buffer whose data starts on a 16-byte boundary of the file (the schema's force_align)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            builder.StartVector(1, len(self.data), BUFFER_ALIGNMENT)
            builder.head -= len(self.data)
            builder.Bytes[builder.head:builder.head + len(self.data)] = self.data
            data = builder.EndVector(len(self.data))
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _buffer(data: bytes | None) -> schema.BufferT:
    buffer = _AlignedBufferT()
    buffer.data = data
    return buffer


def _tensor_t(tensor: Tensor, buffer: int) -> schema.TensorT:
    if tensor.dtype not in _TENSOR_TYPES:
        raise McuformerError(f"tensor '{tensor.name}' has the unsupported type {tensor.dtype}")
    t = schema.TensorT()
    t.shape = np.asarray(tensor.shape, np.int32)
    t.type = INT4 if tensor.int4 else _TENSOR_TYPES[tensor.dtype]
    t.buffer = buffer
    t.name = tensor.name
    t.isVariable = tensor.is_variable
    t.hasRank = True
    if tensor.quantization is not None:
        q = schema.QuantizationParametersT()
        q.scale = np.asarray(tensor.quantization.scale, np.float32)
        q.zeroPoint = np.asarray(tensor.quantization.zero_point, np.int64)
        q.quantizedDimension = tensor.quantization.axis
        t.quantization = q
    return t


def _operator_code(opcode: str, version: int) -> schema.OperatorCodeT:
    code = schema.OperatorCodeT()
    builtin = _BUILTIN_CODES.get(opcode, schema.BuiltinOperator.CUSTOM)
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin,
                                     schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.customCode = opcode if builtin == schema.BuiltinOperator.CUSTOM else None
    code.version = version
    return code


def _check_offline_plan(model: Model, tensor_count: int) -> None:
    plan = model.metadata.get(OFFLINE_PLAN)
    if plan is not None and (len(plan) < 12 or np.frombuffer(plan[:12], "<i4")[2] != tensor_count
                             or len(plan) != 4 * (3 + tensor_count)):
        raise McuformerError(f"the {OFFLINE_PLAN} metadata does not cover the model's "
                             f"{tensor_count} tensors: plan the model after changing it")


def write(model: Model) -> bytes:
    """The model as .tflite bytes: kept tensors numbered in `live_tensors` order."""
    tensors = model.live_tensors()
    _check_offline_plan(model, len(tensors))
    index = {t: i for i, t in enumerate(tensors)}
    buffers, buffer_index = [_buffer(None)], {}  # buffer 0: the empty buffer of every activation
    tensors_t = []
    for t in tensors:
        if t.buffer is not None and t.buffer not in buffer_index:
            buffer_index[t.buffer] = len(buffers)
            buffers.append(_buffer(t.buffer.data))
        tensors_t.append(_tensor_t(t, buffer_index.get(t.buffer, 0)))
    codes, code_index, operators_t = [], {}, []
    for op in model.operators:
        key = (op.opcode, op.version)
        if key not in code_index:
            code_index[key] = len(codes)
            codes.append(_operator_code(*key))
        op_t = schema.OperatorT()
        op_t.opcodeIndex = code_index[key]
        op_t.inputs = np.asarray([index[t] if t is not None else -1 for t in op.inputs], np.int32)
        op_t.outputs = np.asarray([index[t] for t in op.outputs], np.int32)
        op_t.builtinOptionsType, op_t.builtinOptions = op.options_type, op.options
        if op.custom_options:
            op_t.customOptions = np.frombuffer(op.custom_options, np.uint8)
        operators_t.append(op_t)
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.name = tensors_t, operators_t, model.subgraph_name
    sub.inputs = np.asarray([index[t] for t in model.inputs], np.int32)
    sub.outputs = np.asarray([index[t] for t in model.outputs], np.int32)
    metadata_t = []
    for name, data in model.metadata.items():
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(buffers)
        buffers.append(_buffer(bytes(data)))
        metadata_t.append(entry)
    signatures_t = []
    for signature in model.signatures:
        s = schema.SignatureDefT()
        s.signatureKey, s.subgraphIndex = signature.key, 0
        s.inputs, s.outputs = ([_tensor_map(name, index[t]) for name, t in pairs]
                               for pairs in (signature.inputs, signature.outputs))
        signatures_t.append(s)
    model_t = schema.ModelT()
    model_t.version, model_t.description = 3, model.description
    model_t.operatorCodes, model_t.subgraphs, model_t.buffers = codes, [sub], buffers
    model_t.metadata, model_t.signatureDefs = metadata_t, signatures_t
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model_t.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _tensor_map(name: str, tensor_index: int) -> schema.TensorMapT:
    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name, tensor_index
    return entry
