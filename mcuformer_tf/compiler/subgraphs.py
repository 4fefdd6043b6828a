"""What each fused kind stands for: its MCUF operator (`FUSED`) and its builtin subgraph (`STEPS`).

`FUSED` is the one table of the fusion, kind -> `FusedKind`: the custom code;
the roles that become the operator's inputs, in order (the block input, then
the constants the kernel computes with; an optional one, marked "?", is an
omitted input where the block lacks it); the in-place pair (output position
-> input position) the offline plan honours, with the output's offset from
the input where it is not the same; and the `mcuf_kernels` function deriving
the kernel's parameters from the builtin subgraph. A kind is fused
once that function exists (`builder`).

A `Step` is one operator of a `match.Block`, named by its operator role: its
opcode, its inputs (each a role, a tuple of roles meaning the first one the
block has, or None for an omitted optional input) and its output roles, in
graph order. A step is optional when the block may lack it (the converter
folds identity LayerNorm affines, moves token RESHAPEs, keeps low-rank layers
dense where that is smaller); it is there exactly when its output role is.
The steps are the converter's wiring: where one block reads otherwise (the
other operand order of a commutative ADD/MUL, a RESHAPE without its shape
input, …), `fuse` records the difference in the custom options.

Constants split in two. The ones a kernel computes with (epsilon, gamma,
beta, weights, biases, the QuickGELU factor, the position embedding) become
inputs of the fused operator (`FUSED`). The structure constants (the
LayerNorm's axes, the permutations, RESHAPE shapes), whose meaning `match`
proved, are implied by the kind: `structure_constant` writes them as the
converter does (an axis as the int32 scalar -1, a shape as the RESHAPE's output
shape). Builtin options likewise are the ones `match` proved, as the
converter writes them (`builtin_options`), and operator versions the
converter's for int8 (`VERSIONS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.compiler import kernels as mcuf_kernels
from mcuformer_tf.tflm.arena_plan import ALIGNMENT

OPTIONAL = "?"


@dataclass(frozen=True)
class FusedKind:
    code: str
    inputs: tuple  # roles in input order; "?" marks an optional one
    in_place: dict  # output position -> input position whose memory it overwrites
    builder: str  # the mcuf_kernels function: (graph, operators) -> kernel
    # (input, output tensor) -> the output's arena offset minus the input's; None: the same offset
    output_offset: Callable | None = None

    @property
    def input_roles(self) -> tuple:
        return tuple(role.rstrip(OPTIONAL) for role in self.inputs)

    @property
    def optional_inputs(self) -> tuple:
        return tuple(role.rstrip(OPTIONAL) for role in self.inputs if role.endswith(OPTIONAL))


def _linear_inputs(name: str) -> tuple:
    return (f"{name}_down_weight?", f"{name}_weight", f"{name}_bias?")


def _tokens_end_with_image(image, tokens) -> int:
    """mcuf/patch_embed.h: tokens larger than the image end where it ends, else start where it
    starts; the offset rounded down to the planner's 16 bytes (the C allows any offset below)."""
    larger_by = max(0, tokens.nbytes - image.nbytes)
    return -((larger_by + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT)


_LN_INPUTS = ("ln_eps", "ln_gamma?", "ln_beta?")
FUSED = {
    "patch_embed": FusedKind("MCUF_PATCH_EMBED", ("input", "conv_weight", "conv_bias?", "pos"),
                             {0: 0}, "patch_embed_kernel", _tokens_end_with_image),
    "attention": FusedKind("MCUF_ATTENTION", ("input", *_LN_INPUTS, *_linear_inputs("qkv"),
                                              *_linear_inputs("proj")), {0: 0},
                           "attention_kernel"),
    "mlp": FusedKind("MCUF_MLP", ("input", *_LN_INPUTS, *_linear_inputs("fc1"), "gelu_scale",
                                  *_linear_inputs("fc2")), {0: 0}, "mlp_kernel"),
}


def builder(kind: str):
    """The mcuf_kernels function deriving `kind`'s kernel, or None (not fused yet)."""
    return getattr(mcuf_kernels, FUSED[kind].builder, None) if kind in FUSED else None


def resolve(spec, tensors: dict):
    """The tensor a step input names: a role, the first present of a tuple of roles, or None."""
    if spec is None:
        return None
    for role in (spec,) if isinstance(spec, str) else spec:
        if tensors.get(role) is not None:
            return tensors[role]
    return None


@dataclass(frozen=True)
class Step:
    role: str  # the operator's role (match.Block.op_roles)
    opcode: str
    inputs: tuple  # per input: a role, a tuple of roles (the first present one), or None
    outputs: tuple  # roles
    optional: bool = False
    options: tuple = ()  # (schema attribute, value) pairs beyond the opcode's defaults


LN_OUT = ("ln_out", "ln_scaled", "ln_normalized")  # the LayerNorm's result, whichever is last


def _layer_norm() -> tuple:
    keep = (("keepDims", True),)
    return (
        Step("ln_mean", "MEAN", ("input", "ln_axis"), ("ln_mean",), options=keep),
        Step("ln_centered", "SUB", ("input", "ln_mean"), ("ln_centered",)),
        Step("ln_squared", "MUL", ("ln_centered", "ln_centered"), ("ln_squared",)),
        Step("ln_variance", "MEAN", ("ln_squared", "ln_variance_axis"), ("ln_variance",),
             options=keep),
        Step("ln_variance_eps", "ADD", ("ln_variance", "ln_eps"), ("ln_variance_eps",)),
        Step("ln_rstd", "RSQRT", ("ln_variance_eps",), ("ln_rstd",)),
        Step("ln_normalized", "MUL", ("ln_centered", "ln_rstd"), ("ln_normalized",)),
        Step("ln_scaled", "MUL", ("ln_normalized", "ln_gamma"), ("ln_scaled",), optional=True),
        Step("ln_out", "ADD", (("ln_scaled", "ln_normalized"), "ln_beta"), ("ln_out",),
             optional=True),
    )


def _linear(name: str, x: tuple) -> tuple:
    """A linear layer reading the first present of roles `x`: a low-rank pair or one layer."""
    down, out = f"{name}_down_out", f"{name}_out"
    return (
        Step(down, "FULLY_CONNECTED", (x, f"{name}_down_weight", None), (down,), optional=True),
        Step(out, "FULLY_CONNECTED", ((down, *x), f"{name}_weight", f"{name}_bias"), (out,)),
    )


def _tokens_reshape(role: str, source) -> Step:
    return Step(role, "RESHAPE", (source, f"{role}_shape"), (role,), optional=True)


FC1 = ("fc1_tokens", "fc1_out")
STEPS = {
    "patch_embed": (
        Step("conv_out", "CONV_2D", ("input", "conv_weight", "conv_bias"), ("conv_out",),
             options=(("padding", schema.Padding.VALID),)),
        Step("tokens", "RESHAPE", ("conv_out", "tokens_shape"), ("tokens",)),
        Step("output", "ADD", ("tokens", "pos"), ("output",)),
    ),
    "attention": (
        *_layer_norm(),
        *_linear("qkv", LN_OUT),
        Step("qkv_heads", "RESHAPE", ("qkv_out", "qkv_heads_shape"), ("qkv_heads",)),
        Step("qkv_transposed", "TRANSPOSE", ("qkv_heads", "qkv_perm"), ("qkv_transposed",)),
        Step("qkv_split", "UNPACK", ("qkv_transposed",), ("q", "k", "v"),
             options=(("num", 3), ("axis", 0))),
        Step("scores", "BATCH_MATMUL", ("q", "k"), ("scores",), options=(("adjY", True),)),
        Step("probs", "SOFTMAX", ("scores",), ("probs",), options=(("beta", 1.0),)),
        Step("context", "BATCH_MATMUL", ("probs", "v"), ("context",)),
        Step("context_tokens", "TRANSPOSE", ("context", "context_perm"), ("context_tokens",),
             optional=True),
        _tokens_reshape("context_flat", "context_tokens"),
        *_linear("proj", ("context_flat", "context")),
        Step("output", "ADD", ("input", "proj_out"), ("output",)),
    ),
    "mlp": (
        *_layer_norm(),
        *_linear("fc1", LN_OUT),
        _tokens_reshape("fc1_tokens", "fc1_out"),
        Step("gelu_scaled", "MUL", (FC1, "gelu_scale"), ("gelu_scaled",)),
        _tokens_reshape("gelu_scaled_tokens", "gelu_scaled"),
        Step("gelu_sigmoid", "LOGISTIC", (("gelu_scaled_tokens", "gelu_scaled"),),
             ("gelu_sigmoid",)),
        _tokens_reshape("gelu_sigmoid_tokens", "gelu_sigmoid"),
        Step("gelu_out", "MUL", (FC1, ("gelu_sigmoid_tokens", "gelu_sigmoid")), ("gelu_out",)),
        *_linear("fc2", ("gelu_out",)),
        Step("output", "ADD", ("input", "fc2_out"), ("output",)),
    ),
}

# The converter's operator versions for these int8 operators; FULLY_CONNECTED with
# keep_num_dims is version 5, and a model holds one version per builtin (the highest).
VERSIONS = {"ADD": 2, "BATCH_MATMUL": 2, "CONV_2D": 3, "FULLY_CONNECTED": 4, "LOGISTIC": 2,
            "MEAN": 2, "MUL": 2, "RESHAPE": 1, "RSQRT": 2, "SOFTMAX": 2, "SUB": 2,
            "TRANSPOSE": 4, "UNPACK": 2}
KEEP_NUM_DIMS_VERSION = 5

_OPTIONS = {  # opcode -> (BuiltinOptions type, its object-API class)
    "ADD": (schema.BuiltinOptions.AddOptions, schema.AddOptionsT),
    "SUB": (schema.BuiltinOptions.SubOptions, schema.SubOptionsT),
    "MUL": (schema.BuiltinOptions.MulOptions, schema.MulOptionsT),
    "MEAN": (schema.BuiltinOptions.ReducerOptions, schema.ReducerOptionsT),
    "FULLY_CONNECTED": (schema.BuiltinOptions.FullyConnectedOptions,
                        schema.FullyConnectedOptionsT),
    "CONV_2D": (schema.BuiltinOptions.Conv2DOptions, schema.Conv2DOptionsT),
    "SOFTMAX": (schema.BuiltinOptions.SoftmaxOptions, schema.SoftmaxOptionsT),
    "BATCH_MATMUL": (schema.BuiltinOptions.BatchMatMulOptions, schema.BatchMatMulOptionsT),
    "UNPACK": (schema.BuiltinOptions.UnpackOptions, schema.UnpackOptionsT),
}
PERMUTATIONS = {"qkv_perm": (2, 0, 3, 1, 4), "context_perm": (0, 2, 1, 3)}
AXES = ("ln_axis", "ln_variance_axis")
SHAPE_SUFFIX = "_shape"


def steps(kind: str) -> dict:
    """The kind's steps by operator role, in graph order."""
    return {step.role: step for step in STEPS[kind]}


def optional_roles(kind: str) -> tuple:
    """The output roles of the kind's optional steps."""
    return tuple(role for step in STEPS[kind] if step.optional for role in step.outputs)


def is_structure(role: str) -> bool:
    return role in AXES or role in PERMUTATIONS or role.endswith(SHAPE_SUFFIX)


def structure_constant(role: str, tensors: dict) -> np.ndarray:
    """The value the converter writes for structure constant `role` (tensors: role -> tensor)."""
    if role in AXES:
        return np.asarray(-1, np.int32)
    if role in PERMUTATIONS:
        return np.asarray(PERMUTATIONS[role], np.int32)
    return np.asarray(tensors[role[:-len(SHAPE_SUFFIX)]].shape, np.int32)


def builtin_options(step: Step, reads: list, output_shape: tuple, dims: dict) -> tuple:
    """(options type, options object) of a step's operator reading roles `reads`, as the
    converter writes them (a RESHAPE without a shape input carries its shape as an option)."""
    if step.opcode == "RESHAPE" and step.role + SHAPE_SUFFIX not in reads:
        options = schema.ReshapeOptionsT()
        options.newShape = list(output_shape)
        return schema.BuiltinOptions.ReshapeOptions, options
    if step.opcode not in _OPTIONS:
        return schema.BuiltinOptions.NONE, None
    options_type, cls = _OPTIONS[step.opcode]
    options = cls()
    for name, value in step.options:
        setattr(options, name, value)
    if step.opcode == "FULLY_CONNECTED":
        options.keepNumDims = len(output_shape) != 2
    if step.opcode == "CONV_2D":
        options.strideH = options.strideW = dims["patch"]
    return options_type, options


def version(opcode: str, options) -> int:
    if opcode == "FULLY_CONNECTED" and options.keepNumDims:
        return KEEP_NUM_DIMS_VERSION
    return VERSIONS[opcode]
