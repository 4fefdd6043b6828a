"""Rebuild the builtin subgraph an MCUF operator stands for, from the operator alone.

`builtin_ops` turns one fused operator of the IR back into the builtin
operators and tensors it replaced: its inputs are the constants, its custom
options (`fuse`) give every intermediate tensor's quantisation and shape,
which optional steps the block had and any wiring off the converter's, and
`subgraphs` the steps, structure constants, builtin options and versions.
`unfuse(model)` does it for every MCUF operator of a model, so stock TFLM can
run it. The kernels' parameters come from the same place: `kernel(graph, op)`
hands the rebuilt subgraph to the kind's `mcuf_kernels` builder, as the
fusion pass did, so they are derived from the .tflite exactly as TFLM's
Prepare derives them.
"""
from __future__ import annotations

import numpy as np
from flatbuffers import flexbuffers

from mcuformer_tf.compiler import ir, subgraphs
from mcuformer_tf.compiler.subgraphs import FUSED, resolve
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.tflite_graph import Quantization, read_model

KINDS = {spec.code: kind for kind, spec in FUSED.items()}
FIELDS = ("dims", "has", "scale", "zero_point", "shape", "reads")


class _Constants:
    """Structure constants by value, one tensor per value (seeded with a model's own)."""

    def __init__(self, model: ir.Model | None = None):
        self.tensors = {}
        for t in model.tensors if model is not None else ():
            if t.is_constant and t.quantization is None:
                self.tensors.setdefault(self._key(t.data), t)

    @staticmethod
    def _key(value: np.ndarray) -> tuple:
        return value.dtype.str, value.shape, value.tobytes()

    def get(self, value: np.ndarray, name: str) -> ir.Tensor:
        key = self._key(value)
        if key not in self.tensors:
            self.tensors[key] = ir.Tensor(name, value.shape, value.dtype,
                                          buffer=ir.Buffer(value.tobytes()))
        return self.tensors[key]


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _well_typed(fields: dict) -> bool:
    """Each field's values of the type `fuse` writes: scales positive numbers, zero points,
    dims and shape entries integers, `has` booleans, `reads` lists of roles."""
    return (all(isinstance(v, float) and np.isfinite(v) and v > 0 for v in fields["scale"].values())
            and all(_integer(v) for v in fields["zero_point"].values())
            and all(_integer(v) and v >= 0 for v in fields["dims"].values())
            and all(isinstance(v, list) and all(_integer(d) and d > 0 for d in v)
                    for v in fields["shape"].values())
            and all(isinstance(v, bool) for v in fields["has"].values())
            and all(isinstance(v, list) and all(r is None or isinstance(r, str) for r in v)
                    for v in fields["reads"].values()))


def _decode(op: ir.Op, label: str) -> dict:
    try:
        options = flexbuffers.Loads(op.custom_options)
        fields = {name: dict(options[name]) for name in FIELDS}
    except Exception as err:  # flexbuffers reports malformed bytes by any exception
        raise McuformerError(f"{label}: its custom options are not an MCUF map "
                             f"({type(err).__name__}: {err})") from None
    if not _well_typed(fields):
        raise McuformerError(f"{label}: its custom options hold a value of the wrong type")
    written = set(fields["scale"])
    if set(fields["zero_point"]) != written or set(fields["shape"]) != written:
        raise McuformerError(f"{label}: its custom options give scale, zero point and shape "
                             "for different tensors")
    return fields


def _check_has(kind: str, options: dict, tensors: dict, label: str) -> None:
    """The `has` flags name exactly the optional roles, and agree with the inputs and tensors."""
    has = options["has"]
    roles = set(subgraphs.optional_roles(kind)) | set(FUSED[kind].optional_inputs)
    if set(has) != roles:
        raise McuformerError(f"{label}: its custom options flag {sorted(has)}, expected "
                             f"{sorted(roles)}")
    for role, flag in has.items():
        if bool(flag) != (tensors.get(role) is not None):
            raise McuformerError(f"{label}: its options say the block {'has' if flag else 'lacks'}"
                                 f" '{role}', its inputs and tensors disagree")


def builtin_ops(op: ir.Op, label: str, constants: _Constants) -> list:
    """The builtin operators (with new intermediate tensors) that MCUF operator `op` replaced."""
    kind = KINDS[op.opcode]
    spec = FUSED[kind]
    options = _decode(op, label)
    if len(op.inputs) != len(spec.inputs) or len(op.outputs) != 1:
        raise McuformerError(f"{label}: {len(op.inputs)} inputs and {len(op.outputs)} outputs, "
                             f"{op.opcode} has {len(spec.inputs)} and 1")
    tensors = dict(zip(spec.input_roles, op.inputs))
    tensors["output"] = op.outputs[0]
    for role, scale in options["scale"].items():
        quantization = Quantization(np.asarray([scale], np.float32),
                                    np.asarray([options["zero_point"][role]], np.int64))
        tensors[role] = ir.Tensor(f"{op.outputs[0].name}/{role}", tuple(options["shape"][role]),
                                  np.dtype(np.int8), quantization)
    _check_has(kind, options, tensors, label)
    ops = []
    for step in subgraphs.STEPS[kind]:
        if tensors.get(step.outputs[0]) is None:
            if step.optional:
                continue
            raise McuformerError(f"{label}: its custom options lack the tensor '{step.outputs[0]}'")
        reads = options["reads"].get(step.role)
        inputs = []
        for role in step.inputs if reads is None else reads:
            if isinstance(role, str) and subgraphs.is_structure(role):
                inputs.append(constants.get(subgraphs.structure_constant(role, tensors),
                                            f"{op.outputs[0].name}/{role}"))
            elif role is not None and resolve(role, tensors) is None and \
                    options["has"].get(role) is not False:
                raise McuformerError(f"{label}: operator '{step.role}' reads '{role}', which "
                                     "the block lacks")
            else:
                inputs.append(resolve(role, tensors))
        outputs = [tensors[role] for role in step.outputs]
        options_type, builtin = subgraphs.builtin_options(
            step, step.inputs if reads is None else reads, outputs[0].shape, options["dims"])
        ops.append(ir.Op(step.opcode, inputs, outputs, options_type, builtin,
                         version=subgraphs.version(step.opcode, builtin)))
    return ops


def unfuse(model: ir.Model) -> None:
    """Replace every MCUF operator by the builtins it stands for; drops the offline plan.

    Each builtin then has the highest version any of its operators needs, as the converter
    writes one operator code per builtin.
    """
    constants = _Constants(model)
    for position, op in enumerate(list(model.operators)):
        if op.opcode in KINDS:
            model.replace_ops([op], builtin_ops(op, f"operator {position} ({op.opcode})",
                                                constants))
    highest = {}
    for op in model.operators:
        highest[op.opcode] = max(highest.get(op.opcode, 0), op.version)
    for op in model.operators:
        if not op.is_custom:
            op.version = highest[op.opcode]
    model.metadata.pop(OFFLINE_PLAN, None)


def builtin_counts(model: ir.Model) -> list:
    """Per operator of `model`: how many builtin operators it stands for (1 unless MCUF)."""
    constants = _Constants(model)
    return [len(builtin_ops(op, f"operator {position} ({op.opcode})", constants))
            if op.opcode in KINDS else 1 for position, op in enumerate(model.operators)]


def subgraph_graph(op: ir.Op, label: str | None = None):
    """The builtin subgraph of MCUF operator `op` alone, as `tflite_graph.read_model` reads it."""
    ops = builtin_ops(op, label or op.opcode, _Constants())
    return read_model(ir.write(ir.Model([], ops, [op.inputs[0]], list(op.outputs))))


def _ir_tensor(graph, index: int) -> ir.Tensor | None:
    if index < 0:
        return None
    t = graph.tensor(index)
    buffer = ir.Buffer(t.data.tobytes()) if t.is_constant else None
    return ir.Tensor(t.name, t.shape, t.dtype, t.quantization, buffer)


def kernel(graph, op):
    """The mcuf_kernels kernel of MCUF operator `op` of a `read_model` graph."""
    label = f"operator {op.index} ({op.opcode})"
    make = subgraphs.builder(KINDS[op.opcode]) if op.opcode in KINDS else None
    if make is None:
        raise McuformerError(f"{label}: no MCUF kernel runs this custom operator")
    fused = ir.Op.custom(op.opcode, [_ir_tensor(graph, i) for i in op.inputs],
                         [_ir_tensor(graph, i) for i in op.outputs], op.custom_options)
    sub = subgraph_graph(fused, label)
    return make(sub, sub.operators)


def mcuf_scratch(graph, op) -> list:
    """The scratch an MCUF operator's glue requests in Prepare: one buffer, its kernel's
    *_get_buffer_size for the subgraph it stands for."""
    return [kernel(graph, op).buffer_size()]


# For arena_plan.planned_buffers: the scratch requests of every MCUF op.
MCUF_SCRATCH = {opcode: mcuf_scratch for opcode in KINDS}
