"""The fusion pass: each matched block of a kind with an MCUF kernel becomes one CUSTOM operator.

`subgraphs.FUSED` is the one table, kind -> custom code, the roles that become
the operator's inputs, the in-place pair and the `mcuf_kernels` function
deriving the kernel's parameters; a kind is fused once that function exists.

The custom options are a flexbuffer map holding everything else the replaced
builtins held, so that `unfuse` rebuilds them exactly from the operator alone:

- ``dims``: the block's dims (`match.Block.dims`; the rank of a dense layer is 0);
- ``has``: {role: bool} for every optional step and optional input: which of
  them the block has (low-rank or dense layers, LayerNorm affine, RESHAPEs);
- ``scale``, ``zero_point``, ``shape``: {role: …} of every tensor the subgraph
  writes except its output (all int8, one scale and zero point each);
- ``reads``: {operator role: [input roles, null for an omitted input]} for
  the operators that read otherwise than `subgraphs.STEPS` (operand order,
  RESHAPEs without a shape input); empty for the converter's graphs.

Before a block is replaced, its kernel parameters are derived from the
builtins rebuilt from the new operator (which checks every precondition of
the C kernel): a block the kernel cannot take stays builtin, with the reason.
Packed INT4 filters (`int4_weights`) stay INT4 inputs of the fused operator:
the tensor's type says the weight width, and the kernels read the nibbles
(their params' weight_bits, mcuf/dot.h).
"""
from __future__ import annotations

from dataclasses import dataclass

from flatbuffers import flexbuffers

from mcuformer_tf.compiler import ir, subgraphs
from mcuformer_tf.compiler.match import TENSOR_ROLES
from mcuformer_tf.compiler.subgraphs import FUSED, resolve
from mcuformer_tf.compiler.unfuse import subgraph_graph
from mcuformer_tf.errors import McuformerError


def custom_options(block) -> bytes:
    """The flexbuffer options of `block`'s fused operator (see the module docstring)."""
    canonical = {}  # tensor -> its first role: the role of the operator writing it
    for role in TENSOR_ROLES[block.kind]:
        if block.tensors[role] is not None:
            canonical.setdefault(block.tensors[role], role)
    op_roles = {op: role for role, op in block.op_roles.items()}
    steps = subgraphs.steps(block.kind)
    written, reads = {}, {}
    for op in block.ops:
        step = steps[op_roles[op]]
        assert tuple(canonical[t] for t in op.outputs) == step.outputs, step.role
        written.update({role: t for role, t in zip(step.outputs, op.outputs)
                        if t is not block.output})
        default = [resolve(spec, block.tensors) for spec in step.inputs]
        if len(op.inputs) != len(default) or any(a is not b for a, b in zip(op.inputs, default)):
            reads[step.role] = [None if t is None else canonical[t] for t in op.inputs]
    has = {role: role in written for role in subgraphs.optional_roles(block.kind)}
    has.update({role: block.tensors[role] is not None
                for role in FUSED[block.kind].optional_inputs})
    return bytes(flexbuffers.Dumps({
        "dims": {name: int(value or 0) for name, value in block.dims.items()},
        "has": has,
        "scale": {role: float(t.quantization.scale[0]) for role, t in written.items()},
        "zero_point": {role: int(t.quantization.zero_point[0]) for role, t in written.items()},
        "shape": {role: [int(d) for d in t.shape] for role, t in written.items()},
        "reads": reads,
    }))


def fused_op(block) -> ir.Op:
    """The CUSTOM operator standing for `block`, in place as its kind's table says."""
    spec = FUSED[block.kind]
    op = ir.Op.custom(spec.code, [block.tensors[role] for role in spec.input_roles],
                      [block.output], custom_options(block))
    op.in_place = dict(spec.in_place)
    if spec.output_offset is not None:
        op.in_place_offset = {out: spec.output_offset(op.inputs[inp], op.outputs[out])
                              for out, inp in spec.in_place.items()}
    return op


@dataclass
class Fusion:
    fused: list  # (match.Block, custom code), in graph order
    kept: list  # (match.Block, why it stays builtin)


def fuse(model: ir.Model, blocks: list) -> Fusion:
    """Replace every block a kernel can take by its fused operator; the rest stay builtin."""
    result = Fusion([], [])
    for block in blocks:
        make_kernel = subgraphs.builder(block.kind)
        if make_kernel is None:
            result.kept.append((block, f"no MCUF kernel for {block.kind} blocks"))
            continue
        op = fused_op(block)
        try:
            graph = subgraph_graph(op)
            make_kernel(graph, graph.operators)
        except McuformerError as err:
            result.kept.append((block, str(err)))
            continue
        model.replace_ops(block.ops, [op])
        result.fused.append((block, op.opcode))
    return result
