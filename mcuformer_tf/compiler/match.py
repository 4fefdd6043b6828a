"""Find the ViT blocks of an unfused int8 model and prove each one's structure.

`match(model)` walks the operators in order and places every one in a block,
each a contiguous run of operators of one of four kinds:

- ``patch_embed``: CONV_2D (kernel = stride = P, VALID) → RESHAPE [1,N,D] →
  ADD of a constant position embedding;
- ``attention``: LayerNorm → qkv linear → RESHAPE [1,N,3,h,hd] → TRANSPOSE →
  UNPACK q, k, v → BATCH_MATMUL(q, kᵀ) → SOFTMAX → BATCH_MATMUL(p, v) →
  [TRANSPOSE → RESHAPE; optional when h = 1] → proj linear → ADD residual;
- ``mlp``: LayerNorm → fc1 linear → QuickGELU (MUL by a constant, LOGISTIC,
  MUL; RESHAPEs to [1,N,hidden] in between) → fc2 linear → ADD residual;
- ``head``: LayerNorm → MEAN over the tokens → fc linear (the logits).

The graph must be a patch embedding reading the graph's only input, then
attention and MLP blocks, each reading the previous block's output, then a
head writing the graph's only output. A block matches only if everything its
fused kernel would rely on is proven: operator types and options (no fused
activation, keep_dims, adj_x/adj_y, softmax beta 1, VALID padding, …), the
dataflow between its operators, that it reads nothing but its input and
constants, that every tensor it writes except its output is read by its own
operators only (and is no graph output), constants where constants must be
(weights, biases, LayerNorm gamma/beta/eps, axes, permutations, shapes, the
position embedding, the QuickGELU factor), int8 activations with per-tensor
quantisation, shapes consistent with N, D, heads, head_dim, ranks, and
RESHAPE/TRANSPOSE/UNPACK outputs quantised exactly as their inputs. The first
operator that no block explains ends `match` in a McuformerError naming it:
the compiler refuses a graph it cannot prove it understands.

The result, per block, is a `Block`: `kind`, `ops` (graph order), `tensors`
(role -> ir.Tensor, or None for an optional role absent from this block),
`op_roles` (role -> ir.Op) and `dims`. The converter folds constants that do
nothing (LayerNorm gamma = 1 and beta = 0, zero biases: a fresh supernet's)
and moves token RESHAPEs across elementwise ops, so those roles are optional.
The roles, per kind (TENSOR_ROLES; "?" marks an optional one):

- every block: ``input`` and ``output`` (the token tensor [1,N,D] in and out;
  for patch_embed the input is the image [1,H,W,C], for head the output is
  the logits [1,classes]).
- LayerNorm, in attention, mlp and head (LAYER_NORM), in the order computed:
  ``ln_axis`` (const, the last axis) → ``ln_mean`` [1,N,1] = MEAN(input);
  ``ln_centered`` = SUB(input, ln_mean); ``ln_squared`` = MUL(c, c);
  ``ln_variance_axis`` (const) → ``ln_variance`` = MEAN(ln_squared);
  ``ln_eps`` (const scalar) → ``ln_variance_eps`` = ADD; ``ln_rstd`` = RSQRT;
  ``ln_normalized`` = MUL(ln_centered, ln_rstd); ``ln_gamma``? (const [D]) →
  ``ln_scaled``? = MUL; ``ln_beta``? (const [D]) → ADD. ``ln_out`` is the
  LayerNorm's result: that ADD's output, else ln_scaled, else ln_normalized.
- a linear layer L (qkv, proj, fc1, fc2, and the head's fc), `linear_roles`:
  ``L_down_weight``? (const int8 [r, in]) and ``L_down_out``? (the rank-r
  activation) when low-rank (a no-bias FULLY_CONNECTED to rank r whose output
  only the second FULLY_CONNECTED reads), ``L_weight`` (const int8 [out, in
  or r], per tensor or per output channel), ``L_bias``? (const int32 [out]),
  ``L_out`` (the head's is its ``output``). FULLY_CONNECTED outputs are
  [N, out] or, with keep_num_dims, the input's shape with out last.
- patch_embed: ``conv_weight`` [D,P,P,C], ``conv_bias``? [D], ``conv_out``
  [1,H/P,W/P,D], ``tokens_shape``? (a RESHAPE's constant shape input),
  ``tokens`` [1,N,D], ``pos`` (const [N,D] or [1,N,D]).
- attention: LAYER_NORM, qkv linear, ``qkv_heads_shape``?, ``qkv_heads``
  [1,N,3,h,hd], ``qkv_perm`` (const [2,0,3,1,4]), ``qkv_transposed``
  [3,1,h,N,hd], ``q``, ``k``, ``v`` [1,h,N,hd], ``scores`` [1,h,N,N] =
  BATCH_MATMUL(q, k, adj_y), ``probs`` = SOFTMAX, ``context`` [1,h,N,hd] =
  BATCH_MATMUL(probs, v), ``context_perm``? (const [0,2,1,3]),
  ``context_tokens``? [1,N,h,hd], ``context_flat_shape``?, ``context_flat``?
  [N,h·hd] or [1,N,h·hd] (those four absent only when h = 1 and the context
  feeds proj directly), proj linear.
- mlp: LAYER_NORM, fc1 linear, ``gelu_scale`` (const scalar, 1.702 in
  float), ``gelu_scaled`` = MUL(fc1, gelu_scale), ``gelu_sigmoid`` =
  LOGISTIC, ``gelu_out`` = MUL(fc1, sigmoid), fc2 linear. Each of fc1_out,
  gelu_scaled and gelu_sigmoid may be followed by a RESHAPE to [1,N,hidden]
  (``fc1_tokens``?, ``gelu_scaled_tokens``?, ``gelu_sigmoid_tokens``?, each
  with its ``…_shape``?) which the next operator then reads; "fc1" in the
  gate is fc1_out or fc1_tokens (the same bytes). The elementwise tensors
  are [N,hidden] or [1,N,hidden].
- head: LAYER_NORM, ``pool_axis`` (const, the token axis), ``pooled`` [1,D]
  = MEAN, fc linear with ``output`` as its out.

Operator roles are the roles of the tensors they write (``ln_mean`` is the
MEAN that writes ``ln_mean``, ``qkv_out`` the FULLY_CONNECTED writing
``qkv_out``, ``output`` the residual ADD, the beta ADD is ``ln_out``, …),
except the UNPACK writing q, k and v, ``qkv_split``. Binary ADD and MUL may
take their operands in either order (TFLM's int8 ADD and MUL are symmetric
in them); SUB may not.

`dims`: patch_embed: image_height, image_width, channels, patch, tokens, dim;
attention: tokens, dim, heads, head_dim, qkv_rank, proj_rank; mlp: tokens,
dim, hidden, fc1_rank, fc2_rank; head: tokens, dim, classes, fc_rank (a rank
is None for a dense layer).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.errors import McuformerError

LAYER_NORM = ("ln_axis", "ln_mean", "ln_centered", "ln_squared", "ln_variance_axis", "ln_variance",
              "ln_eps", "ln_variance_eps", "ln_rstd", "ln_normalized", "ln_gamma", "ln_scaled",
              "ln_beta", "ln_out")


def linear_roles(name: str, out: str | None = None) -> tuple:
    """The tensor roles of linear layer `name`; `out` names its output (default name_out)."""
    return (f"{name}_down_weight", f"{name}_down_out", f"{name}_weight", f"{name}_bias",
            out or f"{name}_out")


TENSOR_ROLES = {
    "patch_embed": ("input", "conv_weight", "conv_bias", "conv_out", "tokens_shape", "tokens",
                    "pos", "output"),
    "attention": ("input", *LAYER_NORM, *linear_roles("qkv"), "qkv_heads_shape", "qkv_heads",
                  "qkv_perm", "qkv_transposed", "q", "k", "v", "scores", "probs", "context",
                  "context_perm", "context_tokens", "context_flat_shape", "context_flat",
                  *linear_roles("proj"), "output"),
    "mlp": ("input", *LAYER_NORM, *linear_roles("fc1"), "fc1_tokens_shape", "fc1_tokens",
            "gelu_scale", "gelu_scaled", "gelu_scaled_tokens_shape", "gelu_scaled_tokens",
            "gelu_sigmoid", "gelu_sigmoid_tokens_shape", "gelu_sigmoid_tokens", "gelu_out",
            *linear_roles("fc2"), "output"),
    "head": ("input", *LAYER_NORM, "pool_axis", "pooled", *linear_roles("fc", "output")),
}
_NONE = schema.ActivationFunctionType.NONE


@dataclass
class Block:
    kind: str
    ops: list  # ir.Ops, in graph order
    tensors: dict  # role -> ir.Tensor, or None for an optional role absent here
    op_roles: dict  # role -> ir.Op
    dims: dict

    @property
    def input(self):
        return self.tensors["input"]

    @property
    def output(self):
        return self.tensors["output"]


class _NoMatch(Exception):
    def __init__(self, reason: str, progress: int):
        super().__init__(reason)
        self.progress = progress  # operators matched before the failure


class _Builder:
    """Roles found so far for one candidate block, and the checks that fail it."""

    def __init__(self, model, consumers, kind):
        self.model, self.consumers, self.kind = model, consumers, kind
        self.tensors, self.op_roles, self.dims = {}, {}, {}

    def fail(self, reason: str):
        raise _NoMatch(reason, len(self.op_roles))

    def find(self, reads, opcode, accept=None) -> list:
        """The `opcode` operators reading tensor `reads` (and passing `accept`) not yet taken."""
        return [op for op in self.consumers.get(reads, []) if op.opcode == opcode
                and op not in self.op_roles.values() and (accept is None or accept(op))]

    def op(self, role, reads, opcode, inputs=None, outputs=1, accept=None):
        """The one `opcode` operator reading tensor `reads` (and, if given, passing `accept`)."""
        found = self.find(reads, opcode, accept)
        if len(found) != 1:
            self.fail(f"{role}: {len(found)} {opcode} operators read '{reads.name}', expected 1")
        op = found[0]
        if any(t is None for t in op.inputs[:2]):
            self.fail(f"{role}: {opcode} has an omitted input")
        if inputs is not None and len(op.inputs) not in (inputs if isinstance(inputs, tuple)
                                                         else (inputs,)):
            self.fail(f"{role}: {opcode} has {len(op.inputs)} inputs")
        if len(op.outputs) != outputs:
            self.fail(f"{role}: {opcode} has {len(op.outputs)} outputs, expected {outputs}")
        if (op.option("fused_activation_function") or _NONE) != _NONE:
            self.fail(f"{role}: {opcode} has a fused activation")
        self.op_roles[role] = op
        return op

    def activation(self, role, tensor, *shapes):
        """Record an int8 per-tensor-quantised activation of one of `shapes`."""
        if tensor is None or tensor.is_constant:
            self.fail(f"{role}: expected an activation, found a constant")
        if tensor.dtype != np.int8 or tensor.quantization is None or \
                tensor.quantization.per_channel:
            self.fail(f"{role} '{tensor.name}': not int8 with one scale and zero point")
        if tuple(tensor.shape) not in {tuple(shape) for shape in shapes}:
            self.fail(f"{role} '{tensor.name}': shape {list(tensor.shape)}, expected "
                      + " or ".join(str(list(shape)) for shape in shapes))
        self.tensors[role] = tensor
        return tensor

    def constant(self, role, tensor, dtype, shape=None, size=None, per_channel=False):
        """Record a constant of `dtype` with `shape` (or `size` elements); an int8 one quantised
        per tensor unless `per_channel` (weights)."""
        if tensor is None or not tensor.is_constant:
            self.fail(f"{role}: expected a constant")
        if tensor.dtype != dtype:
            self.fail(f"{role} '{tensor.name}': {tensor.dtype}, expected {np.dtype(dtype)}")
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            self.fail(f"{role} '{tensor.name}': shape {list(tensor.shape)}, expected {list(shape)}")
        if size is not None and tensor.data.size != size:
            self.fail(f"{role} '{tensor.name}': {tensor.data.size} values, expected {size}")
        if dtype == np.int8 and (tensor.quantization is None or (
                tensor.quantization.per_channel and not per_channel)):
            self.fail(f"{role} '{tensor.name}': not int8 with one scale and zero point")
        self.tensors[role] = tensor
        return tensor

    def same_quantization(self, role, tensor, source):
        q, s = tensor.quantization, source.quantization
        if not (np.array_equal(q.scale, s.scale) and np.array_equal(q.zero_point, s.zero_point)):
            self.fail(f"{role} '{tensor.name}': quantised unlike its input '{source.name}'")

    def axes(self, role, tensor, rank, expected):
        """Record a constant int32 axis list naming the axes `expected` of a rank-`rank` input."""
        self.constant(role, tensor, np.int32)
        axes = sorted(int(a) % rank for a in tensor.data.reshape(-1))
        if axes != list(expected):
            self.fail(f"{role}: reduces axes {axes}, expected {list(expected)}")

    def shape_input(self, role, op):
        """A RESHAPE's optional shape input, which must be constant if present."""
        if len(op.inputs) > 1 and op.inputs[1] is not None:
            self.constant(role, op.inputs[1], np.int32)

    def permutation(self, role, op, expected):
        perm = self.constant(role, op.inputs[1], np.int32)
        if [int(p) for p in perm.data.reshape(-1)] != list(expected):
            self.fail(f"{role}: permutation {perm.data.tolist()}, expected {list(expected)}")

    def binary(self, role, op, operand, other=None):
        """The operand of a commutative ADD/MUL other than `operand` (which it must read)."""
        if len(op.inputs) != 2 or operand not in op.inputs:
            self.fail(f"{role}: {op.opcode} does not take '{operand.name}' and one more operand")
        rest = list(op.inputs)
        rest.remove(operand)
        if other is not None and rest[0] is not other:
            self.fail(f"{role}: {op.opcode} reads '{rest[0].name}' instead of '{other.name}'")
        return rest[0]

    def broadcast_output(self, role, op, *shapes):
        """The op's output: shaped as its operands broadcast, which must be one of `shapes`."""
        try:
            expected = np.broadcast_shapes(*(t.shape for t in op.inputs))
        except ValueError:
            self.fail(f"{role}: operand shapes {[list(t.shape) for t in op.inputs]} "
                      "do not broadcast")
        if tuple(expected) not in {tuple(shape) for shape in shapes}:
            self.fail(f"{role}: operands broadcast to {list(expected)}, expected "
                      + " or ".join(str(list(shape)) for shape in shapes))
        return self.activation(role, op.outputs[0], expected)

    def constant_operand(self, t):
        """Accepts a binary operator reading `t` and a constant."""
        return lambda op: len(op.inputs) == 2 and any(
            u is not t and u is not None and u.is_constant for u in op.inputs)


def _layer_norm(b: _Builder, x, tokens: int, dim: int):
    """LayerNorm's nine operators on tokens `x` [1,N,D]; returns ln_out."""
    row, full = (1, tokens, 1), (1, tokens, dim)
    mean = b.op("ln_mean", x, "MEAN", inputs=2, accept=lambda op: op.inputs[0] is x)
    if not mean.option("keep_dims"):
        b.fail("ln_mean: MEAN without keep_dims")
    b.axes("ln_axis", mean.inputs[1], 3, [2])
    b.activation("ln_mean", mean.outputs[0], row)
    sub = b.op("ln_centered", x, "SUB", inputs=2)
    if sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
        b.fail("ln_centered: SUB is not (input - ln_mean)")
    centered = b.activation("ln_centered", sub.outputs[0], full)
    square = b.op("ln_squared", centered, "MUL", inputs=2,
                  accept=lambda op: op.inputs[0] is centered and op.inputs[1] is centered)
    squared = b.activation("ln_squared", square.outputs[0], full)
    var = b.op("ln_variance", squared, "MEAN", inputs=2)
    if not var.option("keep_dims") or var.inputs[0] is not squared:
        b.fail("ln_variance: not a MEAN with keep_dims of ln_squared")
    b.axes("ln_variance_axis", var.inputs[1], 3, [2])
    variance = b.activation("ln_variance", var.outputs[0], row)
    add_eps = b.op("ln_variance_eps", variance, "ADD")
    b.constant("ln_eps", b.binary("ln_variance_eps", add_eps, variance), np.int8, size=1)
    variance_eps = b.broadcast_output("ln_variance_eps", add_eps, row)
    rsqrt = b.op("ln_rstd", variance_eps, "RSQRT", inputs=1)
    rstd = b.activation("ln_rstd", rsqrt.outputs[0], row)
    normalize = b.op("ln_normalized", rstd, "MUL")
    b.binary("ln_normalized", normalize, rstd, other=centered)
    out = b.broadcast_output("ln_normalized", normalize, full)
    if b.find(out, "MUL", b.constant_operand(out)):
        scale = b.op("ln_scaled", out, "MUL", accept=b.constant_operand(out))
        b.constant("ln_gamma", b.binary("ln_scaled", scale, out), np.int8, shape=(dim,))
        out = b.broadcast_output("ln_scaled", scale, full)
    if b.find(out, "ADD", b.constant_operand(out)):
        shift = b.op("ln_out", out, "ADD", accept=b.constant_operand(out))
        b.constant("ln_beta", b.binary("ln_out", shift, out), np.int8, shape=(dim,))
        out = b.broadcast_output("ln_out", shift, full)
    b.tensors["ln_out"] = out
    return out


def _reads_first(x):
    return lambda op: op.inputs[0] is x


def _bias(op):
    return op.inputs[2] if len(op.inputs) == 3 else None


def _fully_connected(b: _Builder, role, x, rows, in_dim):
    """The FULLY_CONNECTED of `x` (rows x in_dim once flattened); returns (op, bias or None)."""
    fc = b.op(role, x, "FULLY_CONNECTED", inputs=(2, 3), accept=_reads_first(x))
    if (fc.option("weights_format") or 0) != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        b.fail(f"{role}: shuffled weights")
    if x.shape[-1] != in_dim or int(np.prod(x.shape[:-1])) != rows:
        b.fail(f"{role}: input {list(x.shape)} is not {rows} rows of {in_dim}")
    return fc, _bias(fc)


def _weight(b: _Builder, role, tensor, in_dim):
    """A constant int8 [out, in_dim] weight, per tensor or per output channel; returns out."""
    weight = b.constant(role, tensor, np.int8, per_channel=True)
    if len(weight.shape) != 2 or weight.shape[1] != in_dim:
        b.fail(f"{role} '{weight.name}': shape {list(weight.shape)}, expected [out, {in_dim}]")
    q = weight.quantization
    if q.per_channel and (q.axis != 0 or q.scale.size != weight.shape[0]):
        b.fail(f"{role} '{weight.name}': per-channel scales not along the output channels")
    return weight.shape[0]


def _fc_output(b: _Builder, role, fc, x, rows, width):
    shape = x.shape[:-1] + (width,) if fc.option("keep_num_dims") else (rows, width)
    return b.activation(role, fc.outputs[0], shape)


def _is_low_rank(b: _Builder, x) -> bool:
    """Whether `x` feeds a no-bias FULLY_CONNECTED whose output only another one reads."""
    first = b.find(x, "FULLY_CONNECTED", _reads_first(x))
    if len(first) != 1 or _bias(first[0]) is not None or len(first[0].outputs) != 1:
        return False
    readers = b.consumers.get(first[0].outputs[0], [])
    return len(readers) == 1 and readers[0].opcode == "FULLY_CONNECTED" and \
        readers[0].inputs[0] is first[0].outputs[0]


def _linear(b: _Builder, name, x, rows, in_dim, out=None):
    """A dense or low-rank linear layer on `x`; returns (its output, out dim, rank or None)."""
    out = out or f"{name}_out"
    rank = None
    if _is_low_rank(b, x):
        down, _ = _fully_connected(b, f"{name}_down_out", x, rows, in_dim)
        rank = _weight(b, f"{name}_down_weight", down.inputs[1], in_dim)
        x = _fc_output(b, f"{name}_down_out", down, x, rows, rank)
        in_dim = rank
    fc, bias = _fully_connected(b, out, x, rows, in_dim)
    out_dim = _weight(b, f"{name}_weight", fc.inputs[1], in_dim)
    if bias is not None:
        b.constant(f"{name}_bias", bias, np.int32, shape=(out_dim,))
    return _fc_output(b, out, fc, x, rows, out_dim), out_dim, rank


def _tokens(b: _Builder, x):
    if x.dtype != np.int8 or len(x.shape) != 3 or x.shape[0] != 1:
        b.fail(f"input '{x.name}': {list(x.shape)} is not int8 tokens [1, N, D]")
    b.activation("input", x, x.shape)
    return x.shape[1], x.shape[2]


def _consumer_shape(b: _Builder, x, opcode) -> tuple:
    """The output shape of an `opcode` operator reading `x`, () if none (a shape giving dims)."""
    return next((tuple(op.outputs[0].shape) for op in b.consumers.get(x, [])
                 if op.opcode == opcode and op.outputs), ())


def _reshape(b: _Builder, role, x, shape):
    op = b.op(role, x, "RESHAPE", inputs=(1, 2))
    b.shape_input(f"{role}_shape", op)
    out = b.activation(role, op.outputs[0], shape)
    b.same_quantization(role, out, x)
    return out


def _maybe_tokens(b: _Builder, role, x, tokens, width):
    """`x`, or its RESHAPE to [1, tokens, width] where one reads it (the converter moves these)."""
    if not b.find(x, "RESHAPE", _reads_first(x)):
        return x
    return _reshape(b, role, x, (1, tokens, width))


def _residual(b: _Builder, x, branch, tokens, dim):
    add = b.op("output", branch, "ADD")
    b.binary("output", add, branch, other=x)
    b.broadcast_output("output", add, (1, tokens, dim))


def _patch_embed(b: _Builder, image):
    if image.dtype != np.int8 or len(image.shape) != 4 or image.shape[0] != 1:
        b.fail(f"input '{image.name}': {list(image.shape)} is not an int8 image [1, H, W, C]")
    b.activation("input", image, image.shape)
    _, height, width, channels = image.shape
    conv = b.op("conv_out", image, "CONV_2D", inputs=(2, 3), accept=_reads_first(image))
    weight = b.constant("conv_weight", conv.inputs[1], np.int8, per_channel=True)
    if len(weight.shape) != 4 or weight.shape[1] != weight.shape[2] or weight.shape[3] != channels:
        b.fail(f"conv_weight: shape {list(weight.shape)} is not [D, P, P, {channels}]")
    dim, patch = weight.shape[0], weight.shape[1]
    if weight.quantization.per_channel and (weight.quantization.axis != 0 or
                                            weight.quantization.scale.size != dim):
        b.fail("conv_weight: per-channel scales not along the output channels")
    if _bias(conv) is not None:
        b.constant("conv_bias", conv.inputs[2], np.int32, shape=(dim,))
    if (conv.option("padding"), conv.option("stride_h"), conv.option("stride_w"),
            conv.option("dilation_h_factor"), conv.option("dilation_w_factor")) != (
            schema.Padding.VALID, patch, patch, 1, 1):
        b.fail("conv_out: CONV_2D is not VALID with stride = kernel and no dilation")
    if height % patch or width % patch:
        b.fail(f"conv_out: image {height}x{width} is not a whole number of {patch}x{patch} patches")
    grid = (height // patch, width // patch)
    conv_out = b.activation("conv_out", conv.outputs[0], (1, *grid, dim))
    tokens = grid[0] * grid[1]
    token_tensor = _reshape(b, "tokens", conv_out, (1, tokens, dim))
    add = b.op("output", token_tensor, "ADD")
    pos = b.constant("pos", b.binary("output", add, token_tensor), np.int8)
    if tuple(pos.shape) not in ((tokens, dim), (1, tokens, dim)):
        b.fail(f"pos: shape {list(pos.shape)}, expected [{tokens}, {dim}]")
    b.broadcast_output("output", add, (1, tokens, dim))
    b.dims.update(image_height=height, image_width=width, channels=channels, patch=patch,
                  tokens=tokens, dim=dim)


def _attention(b: _Builder, x):
    tokens, dim = _tokens(b, x)
    ln_out = _layer_norm(b, x, tokens, dim)
    qkv, qkv_dim, qkv_rank = _linear(b, "qkv", ln_out, tokens, dim)
    shape = _consumer_shape(b, qkv, "RESHAPE")
    if len(shape) != 5 or shape[2] != 3 or int(np.prod(shape[2:])) != qkv_dim:
        b.fail(f"qkv_heads: shape {list(shape)} is not [1, N, 3, heads, head_dim]")
    heads, head_dim = shape[3], shape[4]
    heads_tensor = _reshape(b, "qkv_heads", qkv, (1, tokens, 3, heads, head_dim))
    transpose = b.op("qkv_transposed", heads_tensor, "TRANSPOSE", inputs=2)
    b.permutation("qkv_perm", transpose, (2, 0, 3, 1, 4))
    transposed = b.activation("qkv_transposed", transpose.outputs[0],
                              (3, 1, heads, tokens, head_dim))
    b.same_quantization("qkv_transposed", transposed, heads_tensor)
    unpack = b.op("qkv_split", transposed, "UNPACK", inputs=1, outputs=3)
    if (unpack.option("num"), unpack.option("axis")) != (3, 0):
        b.fail("qkv_split: UNPACK is not 3 along axis 0")
    q, k, v = (b.activation(role, t, (1, heads, tokens, head_dim))
               for role, t in zip("qkv", unpack.outputs))
    for role, t in zip("qkv", (q, k, v)):
        b.same_quantization(role, t, transposed)
    scores_op = b.op("scores", q, "BATCH_MATMUL", inputs=2)
    if list(scores_op.inputs) != [q, k] or scores_op.option("adj_x") or \
            not scores_op.option("adj_y"):
        b.fail("scores: BATCH_MATMUL is not q·kᵀ")
    scores = b.activation("scores", scores_op.outputs[0], (1, heads, tokens, tokens))
    softmax = b.op("probs", scores, "SOFTMAX", inputs=1)
    if softmax.option("beta") != 1.0:
        b.fail(f"probs: SOFTMAX beta {softmax.option('beta')}, expected 1")
    probs = b.activation("probs", softmax.outputs[0], (1, heads, tokens, tokens))
    context_op = b.op("context", probs, "BATCH_MATMUL", inputs=2)
    if list(context_op.inputs) != [probs, v] or context_op.option("adj_x") or \
            context_op.option("adj_y"):
        b.fail("context: BATCH_MATMUL is not probs·v")
    context = b.activation("context", context_op.outputs[0], (1, heads, tokens, head_dim))
    if any(op.opcode == "TRANSPOSE" for op in b.consumers.get(context, [])):
        merge = b.op("context_tokens", context, "TRANSPOSE", inputs=2)
        b.permutation("context_perm", merge, (0, 2, 1, 3))
        merged = b.activation("context_tokens", merge.outputs[0], (1, tokens, heads, head_dim))
        b.same_quantization("context_tokens", merged, context)
        flat_shape = _consumer_shape(b, merged, "RESHAPE")
        if flat_shape not in ((tokens, heads * head_dim), (1, tokens, heads * head_dim)):
            b.fail(f"context_flat: shape {list(flat_shape)}, expected [N, heads * head_dim]")
        context = _reshape(b, "context_flat", merged, flat_shape)
    elif heads != 1:
        b.fail(f"context: {heads} heads reach proj without TRANSPOSE and RESHAPE")
    proj, proj_dim, proj_rank = _linear(b, "proj", context, tokens, heads * head_dim)
    if proj_dim != dim:
        b.fail(f"proj_out: {proj_dim} wide, the tokens are {dim}")
    _residual(b, x, proj, tokens, dim)
    b.dims.update(tokens=tokens, dim=dim, heads=heads, head_dim=head_dim, qkv_rank=qkv_rank,
                  proj_rank=proj_rank)


def _mlp(b: _Builder, x):
    tokens, dim = _tokens(b, x)
    ln_out = _layer_norm(b, x, tokens, dim)
    fc1, hidden, fc1_rank = _linear(b, "fc1", ln_out, tokens, dim)
    rows = ((tokens, hidden), (1, tokens, hidden))
    values = _maybe_tokens(b, "fc1_tokens", fc1, tokens, hidden)
    scale = b.op("gelu_scaled", values, "MUL", accept=b.constant_operand(values))
    b.constant("gelu_scale", b.binary("gelu_scaled", scale, values), np.int8, size=1)
    scaled = b.broadcast_output("gelu_scaled", scale, *rows)
    scaled = _maybe_tokens(b, "gelu_scaled_tokens", scaled, tokens, hidden)
    logistic = b.op("gelu_sigmoid", scaled, "LOGISTIC", inputs=1)
    sigmoid = b.activation("gelu_sigmoid", logistic.outputs[0], scaled.shape)
    sigmoid = _maybe_tokens(b, "gelu_sigmoid_tokens", sigmoid, tokens, hidden)
    gate = b.op("gelu_out", sigmoid, "MUL")
    if b.binary("gelu_out", gate, sigmoid) not in (fc1, values):
        b.fail("gelu_out: MUL does not gate fc1's output")
    gelu = b.broadcast_output("gelu_out", gate, *rows)
    fc2, fc2_dim, fc2_rank = _linear(b, "fc2", gelu, tokens, hidden)
    if fc2_dim != dim:
        b.fail(f"fc2_out: {fc2_dim} wide, the tokens are {dim}")
    _residual(b, x, fc2, tokens, dim)
    b.dims.update(tokens=tokens, dim=dim, hidden=hidden, fc1_rank=fc1_rank, fc2_rank=fc2_rank)


def _head(b: _Builder, x):
    tokens, dim = _tokens(b, x)
    ln_out = _layer_norm(b, x, tokens, dim)
    pool = b.op("pooled", ln_out, "MEAN", inputs=2, accept=lambda op: op.inputs[0] is ln_out)
    if pool.option("keep_dims"):
        b.fail("pooled: MEAN keeps the token axis")
    b.axes("pool_axis", pool.inputs[1], 3, [1])
    pooled = b.activation("pooled", pool.outputs[0], (1, dim))
    _, classes, rank = _linear(b, "fc", pooled, 1, dim, out="output")
    b.dims.update(tokens=tokens, dim=dim, classes=classes, fc_rank=rank)


MATCHERS = {"patch_embed": _patch_embed, "attention": _attention, "mlp": _mlp, "head": _head}


def _close(b: _Builder, start: int, graph_outputs) -> Block:
    """The block, once proven self-contained and contiguous from operator `start`."""
    model, taken = b.model, set(b.op_roles.values())
    ops = [op for op in model.operators if op in taken]
    if set(model.operators[start:start + len(ops)]) != set(ops):
        b.fail("its operators are not contiguous from here")
    written = {t for op in ops for t in op.outputs}
    output = b.tensors["output"]
    for op in ops:
        for t in op.inputs:
            if t is not None and t not in written and t is not b.tensors["input"] \
                    and not t.is_constant:
                b.fail(f"it reads '{t.name}', neither its input nor a constant")
    for t in written - {output}:
        outside = [model.operators.index(op) for op in b.consumers.get(t, []) if op not in ops]
        if outside or t in graph_outputs:
            where = f"operator {outside[0]}" if outside else "the graph's outputs"
            b.fail(f"'{t.name}' is read outside the block ({where})")
    unknown = set(b.tensors) - set(TENSOR_ROLES[b.kind])
    assert not unknown, f"roles missing from TENSOR_ROLES[{b.kind!r}]: {sorted(unknown)}"
    tensors = {role: b.tensors.get(role) for role in TENSOR_ROLES[b.kind]}
    return Block(b.kind, ops, tensors, dict(b.op_roles), dict(b.dims))


def _match(model, kind, start, x, consumers) -> Block:
    b = _Builder(model, consumers, kind)
    MATCHERS[kind](b, x)
    return _close(b, start, set(model.outputs))


def match(model) -> list:
    """Every block of the model in order; McuformerError naming the first operator none explains."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise McuformerError(f"the graph has {len(model.inputs)} inputs and {len(model.outputs)} "
                             "outputs; the compiler takes one image in and logits out")
    consumers = model.consumers()
    blocks, start, x = [], 0, model.inputs[0]
    while start < len(model.operators):
        if not blocks:
            kinds = ("patch_embed",)
        elif blocks[-1].kind != "head":
            kinds = ("attention", "mlp", "head")
        else:
            kinds = ()
        failures = []
        for kind in kinds:
            try:
                blocks.append(_match(model, kind, start, x, consumers))
                break
            except _NoMatch as err:
                failures.append((err.progress, kind, str(err)))
        else:
            op = model.operators[start]
            reason = "it follows the head" if not failures else \
                "as {1}: {2}".format(*max(failures, key=lambda f: f[0]))
            raise McuformerError(f"operator {start} ({op.opcode}) is in no block the compiler "
                                 f"recognises; {reason}")
        start += len(blocks[-1].ops)
        x = blocks[-1].output
    if not blocks or blocks[-1].kind != "head" or blocks[-1].output is not model.outputs[0]:
        raise McuformerError("the graph does not end in a classifier head writing its output")
    return blocks
