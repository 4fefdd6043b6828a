"""The graph as TFLM's planner sees it, rebuilt from a `SubnetConfig`: the pieces both plans share.

A `Net` holds activation sizes and, per operator, its input and output tensors and scratch
sizes, in the converter's order; `Net.buffers` lists them as `arena_plan.planned_buffers`
does for a real .tflite. The unfused graph (`unfused_plan.unfused_net`) and the fused one
(`fused_plan.fused_net`) are built on it and share the patch embedding's image, the LayerNorm
as builtins (MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, then gamma MUL and beta ADD) and the head
(a LayerNorm, MEAN over tokens and FULLY_CONNECTED; with INT4 weights its filter's unpacking
scratch). Also here: the 16-byte alignment and the check every entry point makes of its config.
"""
from __future__ import annotations

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.form import ExportForm
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.tflm.arena_plan import ALIGNMENT, PlannedBuffer


def align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


class Net:
    """A graph as the planner sees it: activation sizes; per operator its tensors and scratch."""

    def __init__(self, image_bytes: int):
        self.sizes = [image_bytes]  # tensor 0 is the graph input
        self.ops = []  # (inputs, outputs, scratch sizes)

    def op(self, inputs, output_sizes, scratch=()) -> list:
        outputs = list(range(len(self.sizes), len(self.sizes) + len(output_sizes)))
        self.sizes += output_sizes
        self.ops.append((tuple(inputs), tuple(outputs), tuple(scratch)))
        return outputs

    def one(self, inputs, size, scratch=()) -> int:
        return self.op(inputs, [size], scratch)[0]

    def buffers(self) -> list:
        """As `arena_plan.planned_buffers`: tensors in index order, then scratch in op order."""
        first, last = [-1] * len(self.sizes), [-1] * len(self.sizes)
        first[0] = last[0] = 0
        for k, (inputs, outputs, _) in enumerate(self.ops):
            for t in outputs:
                first[t] = last[t] = k + 1
            for t in inputs:
                last[t] = k + 1
        last[-1] = len(self.ops)
        buffers = [PlannedBuffer(align(s), first[t], last[t], tensor=t)
                   for t, s in enumerate(self.sizes)]
        for k, (_, _, scratch) in enumerate(self.ops):
            buffers += [PlannedBuffer(align(s), k + 1, k + 1, operator=k) for s in scratch]
        return buffers


_PLANNED: dict = {}  # a graph's key -> (activations, scratch buffers)


def planned_of(key, build) -> tuple:
    """(activations, scratch buffers) among the planned buffers of the `Net` that `build()`
    makes, cached by `key` (a plan's segment, or the fused graph's depth and form)."""
    if key not in _PLANNED:
        buffers = build().buffers()
        activations = sum(1 for b in buffers if b.tensor is not None)
        _PLANNED[key] = activations, len(buffers) - activations
    return _PLANNED[key]


def mean_scratch(out_elements: int) -> tuple:
    """reduce_common.cc for int8 over a rank-3 input and a one-element axis: accumulator, axes."""
    return (4 * out_elements, 12, 4)


def layer_norm(net: Net, x: int, n: int, d: int, affine: bool) -> int:
    """`affine`: gamma MUL and beta ADD kept (see `ExportForm.affine`)."""
    mean = net.one([x], n, mean_scratch(n))
    centred = net.one([x, mean], n * d)
    square = net.one([centred, centred], n * d)
    variance = net.one([square], n, mean_scratch(n))
    shifted = net.one([variance], n)
    inverse = net.one([shifted], n)
    out = net.one([centred, inverse], n * d)
    if affine:
        out = net.one([net.one([out], n * d)], n * d)
    return out


def head(net: Net, x: int, config: SubnetConfig, form: ExportForm) -> None:
    """LayerNorm (gamma and beta kept when trained: no FULLY_CONNECTED follows it to fold into),
    MEAN over tokens, FULLY_CONNECTED (a builtin in both models: it unpacks INT4 weights into
    scratch)."""
    d = config.embed_dim
    pooled = net.one([layer_norm(net, x, config.num_tokens, d, form.trained)], d, mean_scratch(d))
    net.one([pooled], config.num_classes, form.unpacking(d * config.num_classes))


def patch_embedding(net: Net, config: SubnetConfig, form: ExportForm) -> int:
    """The exported model's CONV_2D on the image (tensor 0), unpacking INT4 weights into scratch."""
    d, p = config.embed_dim, config.patch_size
    return net.one([0], config.num_tokens * d, form.unpacking(p * p * 3 * d))


def image_bytes(config: SubnetConfig) -> int:
    return config.image_size * config.image_size * 3


def check_config(config) -> None:
    if not isinstance(config, SubnetConfig):
        raise McuformerError(f"the memory model needs a SubnetConfig, got {type(config).__name__}")
    sizes = {"image_size": config.image_size, "patch_size": config.patch_size,
             "embed_dim": config.embed_dim, "depth": config.depth,
             "num_classes": config.num_classes, "num_heads": min(config.num_heads, default=1),
             "mlp_ratio": min(config.mlp_ratio, default=1)}
    for name, value in sizes.items():
        if not value > 0:
            raise McuformerError(f"{name}: must be positive, got {value}")
