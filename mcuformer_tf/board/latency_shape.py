"""The latency model's view of a .tflite: its NetShape, read from the fused model's MCUF operators'
dims (their custom options) or, for an unfused model, from the blocks the compiler matches in it, and
its export form (per-channel linear kernels: the converter's form of a float model; LayerNorms with
gamma: trained or QAT; packed INT4 weights: weight_bits 4), so that `deploy` and `report` can print
the model's estimate beside what they measure.
"""
from __future__ import annotations

import numpy as np
from flatbuffers import flexbuffers

from mcuformer_tf.board.latency import BlockShape, NetShape
from mcuformer_tf.compiler import ir, match
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.form import ExportForm
from mcuformer_tf.tflm.tflite_graph import read_model

KINDS = {"MCUF_PATCH_EMBED": "patch_embed", "MCUF_ATTENTION": "attention", "MCUF_MLP": "mlp"}


def _blocks(model_bytes: bytes, graph) -> list:
    """(kind, dims, has gamma) of each patch embedding, attention and MLP of the model, in graph order."""
    fused = []
    for op in graph.operators:
        if op.opcode in KINDS:
            options = flexbuffers.Loads(op.custom_options)
            fused.append((KINDS[op.opcode], dict(options["dims"]), bool(dict(options["has"]).get("ln_gamma"))))
    if fused:
        return fused
    return [(block.kind, block.dims, "ln_gamma" in block.op_roles) for block in match.match(ir.read(model_bytes))
            if block.kind in ("patch_embed", "attention", "mlp")]


def _per_channel(graph) -> bool:
    """Whether any linear kernel (a 2-D int8 constant) is quantised per output channel."""
    return any(t.is_constant and len(t.shape) == 2 and t.quantization is not None and len(t.quantization.scale) > 1
               for t in graph.tensors)


def model_shape(model_bytes: bytes) -> tuple[NetShape, ExportForm] | None:
    """The NetShape and export form of a ViT export (fused or not), or None when the model is not one
    (or its MCUF options lack or garble the dims the model reads: a damaged file gets no estimate)."""
    try:
        graph = read_model(model_bytes)
        return _shape(graph, _blocks(model_bytes, graph))
    except (McuformerError, KeyError, TypeError, ValueError, IndexError):
        return None


def _shape(graph, blocks) -> tuple[NetShape, ExportForm] | None:
    kinds = [kind for kind, _, _ in blocks]
    depth = kinds.count("attention")
    if kinds != ["patch_embed"] + ["attention", "mlp"] * depth or not depth:
        return None
    patch = blocks[0][1]
    shapes = tuple(BlockShape(int(a["heads"]), int(m["hidden"]), int(a["qkv_rank"] or 0), int(a["proj_rank"] or 0),
                              int(m["fc1_rank"] or 0), int(m["fc2_rank"] or 0))
                   for (_, a, _), (_, m, _) in zip(blocks[1::2], blocks[2::2]))
    classes = int(np.prod(graph.tensor(graph.outputs[0]).shape))
    form = ExportForm(qat=not _per_channel(graph), trained=any(gamma for _, _, gamma in blocks),
                      weight_bits=4 if any(t.int4 for t in graph.tensors) else 8)
    return NetShape(int(patch["image_height"]), int(patch["patch"]), int(patch["dim"]), classes, shapes), form
