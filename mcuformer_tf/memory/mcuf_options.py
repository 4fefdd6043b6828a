"""The exact length of the MCUF ops' custom options (flexbuffers), rebuilt in the compiler's order.

`compiler.fuse.custom_options` writes, per fused block, a flexbuffer map of its dims, which
optional tensors it has, and every intermediate tensor's scale, zero point and shape (so the
builtins can be rebuilt from it exactly). Its length, part of the compiled file that
`counts.fused_graph_counts` counts exactly (tests: compiled exports of both presets), is rebuilt
here map by map in the compiler's order of insertion.

Speed: the length depends on each number's width only, so it is cached per block form (the
tensor roles present) and number widths; per config a few look-ups.
"""
from __future__ import annotations

import functools

from mcuformer_tf.memory.form import ExportForm
from mcuformer_tf.nas.search_space import HEAD_DIM


def _width_class(value: int) -> int:
    """A stand-in for `value` of the same flexbuffers width (1, 2 or 4 bytes)."""
    return 1 if -128 <= value <= 127 else 128 if -32768 <= value <= 32767 else 32768


def _options_bytes(kind: str, dims: dict, shapes: dict, inputs: set, reads: tuple = ()) -> int:
    """Length of the flexbuffer options `fuse.custom_options` writes for a block of `kind` whose
    intermediate tensors have `shapes` (role -> shape) and whose optional inputs are `inputs`.
    The layout follows the order of insertion, so the maps are filled in the compiler's order
    (steps in graph order). The length depends on each number's width only (a scale is a
    float32, a zero point an int8), so the numbers are replaced by stand-ins of their width and
    the lengths cached by those. `reads`: ((operator role, its input roles), ...) where an
    operator reads otherwise than the steps say.
    """
    return _options_length(kind, tuple((k, _width_class(v)) for k, v in dims.items()),
                           tuple((role, tuple(map(_width_class, shape)))
                                 for role, shape in shapes.items()), frozenset(inputs), reads)


@functools.lru_cache(maxsize=None)
def _options_length(kind: str, dims: tuple, shapes: tuple, inputs: frozenset,
                    reads: tuple) -> int:
    from flatbuffers import flexbuffers

    from mcuformer_tf.compiler import subgraphs

    shapes = dict(shapes)
    written = [role for step in subgraphs.STEPS[kind] for role in step.outputs if role in shapes]
    has = {role: role in shapes for role in subgraphs.optional_roles(kind)}
    has.update({role: role in inputs for role in subgraphs.FUSED[kind].optional_inputs})
    return len(flexbuffers.Dumps({
        "dims": dict(dims), "has": has, "scale": {role: 0.5 for role in written},
        "zero_point": {role: 0 for role in written},
        "shape": {role: list(shapes[role]) for role in written},
        "reads": {role: list(roles) for role, roles in reads}}))


def _ln_shapes(n: int, d: int, affine: bool) -> dict:
    shapes = {"ln_mean": [1, n, 1], "ln_centered": [1, n, d], "ln_squared": [1, n, d],
              "ln_variance": [1, n, 1], "ln_variance_eps": [1, n, 1], "ln_rstd": [1, n, 1],
              "ln_normalized": [1, n, d]}
    if affine:
        shapes.update(ln_scaled=[1, n, d], ln_out=[1, n, d])
    return shapes


def _linear_options(name: str, shape, form: ExportForm, n: int, shapes: dict, inputs: set) -> int:
    """Adds a linear's down-projection tensor and optional inputs; returns its rank (0: dense).
    A dense FULLY_CONNECTED on [1, N, in] keeps [1, N, out]; a factor pair writes [N, ·]."""
    if not shape.dense:
        shapes[f"{name}_down_out"] = [n, shape.rank]
        inputs.add(f"{name}_down_weight")
    if form.trained:
        inputs.add(f"{name}_bias")
    return 0 if shape.dense else shape.rank


def attention_options(n: int, d: int, heads: int, qkv, proj, form: ExportForm) -> int:
    """Options length of MCUF_ATTENTION with these qkv and proj `LinearShape`s."""
    hd = heads * HEAD_DIM
    affine = form.affine(qkv.dense)
    shapes, inputs = _ln_shapes(n, d, affine), {"ln_gamma", "ln_beta"} if affine else set()
    qkv_rank = _linear_options("qkv", qkv, form, n, shapes, inputs)
    shapes["qkv_out"] = [1, n, 3 * hd] if qkv.dense else [n, 3 * hd]
    per_head = [1, heads, n, HEAD_DIM]
    shapes.update(qkv_heads=[1, n, 3, heads, HEAD_DIM], qkv_transposed=[3, 1, heads, n, HEAD_DIM],
                  q=per_head, k=per_head, v=per_head, scores=[1, heads, n, n],
                  probs=[1, heads, n, n], context=per_head)
    if heads > 1:
        shapes.update(context_tokens=[1, n, heads, HEAD_DIM], context_flat=[n, hd])
    proj_rank = _linear_options("proj", proj, form, n, shapes, inputs)
    shapes["proj_out"] = [n, d]
    dims = {"tokens": n, "dim": d, "heads": heads, "head_dim": HEAD_DIM, "qkv_rank": qkv_rank,
            "proj_rank": proj_rank}
    return _options_bytes("attention", dims, shapes, inputs)


def mlp_options(n: int, d: int, h: int, fc1, fc2, form: ExportForm) -> int:
    """Options length of MCUF_MLP with these fc1 and fc2 `LinearShape`s."""
    affine = form.affine(fc1.dense)
    shapes, inputs = _ln_shapes(n, d, affine), {"ln_gamma", "ln_beta"} if affine else set()
    fc1_rank = _linear_options("fc1", fc1, form, n, shapes, inputs)
    reads = ()
    if fc1.dense:
        shapes.update(fc1_out=[1, n, h], gelu_scaled=[1, n, h], gelu_sigmoid=[1, n, h])
    elif form.qat:  # QAT: RESHAPE right after the factors; the gate's MUL reads their [N, H]
        shapes.update(fc1_out=[n, h], fc1_tokens=[1, n, h], gelu_scaled=[1, n, h],
                      gelu_sigmoid=[1, n, h])
        reads = (("gelu_out", ("fc1_out", "gelu_sigmoid")),)
    else:  # the float form reshapes the sigmoid
        shapes.update(fc1_out=[n, h], gelu_scaled=[n, h], gelu_sigmoid=[n, h],
                      gelu_sigmoid_tokens=[1, n, h])
    shapes["gelu_out"] = [1, n, h]
    fc2_rank = _linear_options("fc2", fc2, form, n, shapes, inputs)
    shapes["fc2_out"] = [1, n, d] if fc2.dense else [n, d]
    dims = {"tokens": n, "dim": d, "hidden": h, "fc1_rank": fc1_rank, "fc2_rank": fc2_rank}
    return _options_bytes("mlp", dims, shapes, inputs, reads)


@functools.lru_cache(maxsize=None)
def patch_embed_options(image_size: int, patch_size: int, d: int) -> int:
    grid = image_size // patch_size
    dims = {"image_height": image_size, "image_width": image_size, "channels": 3,
            "patch": patch_size, "tokens": grid * grid, "dim": d}
    shapes = {"conv_out": [1, grid, grid, d], "tokens": [1, grid * grid, d]}
    return _options_bytes("patch_embed", dims, shapes, {"conv_bias"})
