"""`compile_model`: the compiler's passes over one IR: read → match → fuse → plan → write.

Each pass is a function of the `Compilation` (the IR and what earlier passes
found). `match` proves the model is made of the ViT blocks the fused kernels
implement, or refuses it; `fuse` turns each block an MCUF kernel takes into
one MCUF_* custom operator (the others stay builtin, with the reason); `plan`
writes the offline memory plan. Passing other passes (a subset, …) changes
nothing else: `(match_pass, plan_pass)` plans the unfused model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mcuformer_tf.compiler import ir, match
from mcuformer_tf.compiler import plan as offline_plan
from mcuformer_tf.compiler.fuse import Fusion, fuse


@dataclass
class Compilation:
    model: ir.Model
    blocks: list = field(default_factory=list)  # match.Blocks, set by match_pass
    fusion: Fusion | None = None  # set by fuse_pass
    plan: offline_plan.Plan | None = None  # set by plan_pass


def match_pass(compilation: Compilation) -> None:
    compilation.blocks = match.match(compilation.model)


def fuse_pass(compilation: Compilation) -> None:
    compilation.fusion = fuse(compilation.model, compilation.blocks)


def plan_pass(compilation: Compilation) -> None:
    compilation.plan = offline_plan.plan(compilation.model)


PASSES = (match_pass, fuse_pass, plan_pass)


@dataclass
class Compiled:
    model_bytes: bytes
    blocks: list
    fusion: Fusion | None
    plan: offline_plan.Plan | None


def compile_model(model_bytes: bytes, passes=PASSES) -> Compiled:
    """Run `passes` over the IR of a .tflite and write the result; McuformerError if one refuses."""
    compilation = Compilation(ir.read(model_bytes))
    for run in passes:
        run(compilation)
    return Compiled(ir.write(compilation.model), compilation.blocks, compilation.fusion,
                    compilation.plan)
