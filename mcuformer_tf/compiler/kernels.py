"""The fused kernels MCUF_PATCH_EMBED, MCUF_ATTENTION and MCUF_MLP as Python objects over libmcuf.

`patch_embed_kernel`, `attention_kernel` and `mlp_kernel` (graph, ops) each read one exported
subgraph into a kernel object whose parameter structs (`kernel_params`) hold exactly what TFLM's
Prepare derives for its builtins; the object runs the subgraph on int8 buffers: the attention and
the MLP in place on the tokens, the patch embedding into tokens that may share memory with the
image (`PatchEmbedKernel.output_offset`). `buffer_size` is the C kernel's *_get_buffer_size.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

from mcuformer_tf.compiler.kernel_params import (
    MCUF_OK,
    P8,
    PADDING_VALID,
    AttentionParams,
    FcLayer,
    LayerNorm,
    Linear,
    MlpParams,
    PatchEmbedParams,
    add_params,
    batch_matmul_params,
    check_params,
    fc_params,
    int8_buffer,
    int32_array,
    load,
    logistic_params,
    mean_params,
    mul_params,
    p8,
    rsqrt_params,
    softmax_params,
    weights_array,
)
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import prepare


def _scratch(scratch, needed: int) -> np.ndarray:
    scratch = np.zeros(needed, np.int8) if scratch is None else int8_buffer("scratch", scratch, True)
    if scratch.size < needed:
        raise McuformerError(f"scratch: {needed} bytes are required, got {scratch.size}")
    return scratch


_RSQRT_FAILURE = ("a token's LayerNorm variance is below RSQRT's input zero point; TFLM fails with "
                  "'Rsqrt is only defined for positive values'")


@dataclass
class _TokenKernel:
    """A block kernel that overwrites its tokens [N, D] in place, with the constant arrays its
    parameters point to; `_SIZE` names its C *_get_buffer_size function."""

    _SIZE = ""
    params: ctypes.Structure
    input_tensor: int  # the block input x (tokens [N, D])
    output_tensor: int  # the residual ADD's output
    num_tokens: int
    depth: int
    _arrays: list = field(default_factory=list, repr=False)

    def buffer_size(self, sanitize: bool = False) -> int:
        """Bytes of scratch one call needs; McuformerError naming the field the C check refuses."""
        check_params(self.params, sanitize)
        return getattr(load(sanitize), self._SIZE)(ctypes.byref(self.params))

    def _buffers(self, tokens, scratch, sanitize):
        return (int8_buffer("tokens", tokens, writable=True),
                _scratch(scratch, self.buffer_size(sanitize)))


class MlpKernel(_TokenKernel):
    """One MLP subgraph as MCUF_MLP parameters (scratch: hidden + embed bytes)."""

    _SIZE = "mcuf_mlp_get_buffer_size"

    def run(self, tokens: np.ndarray, scratch: np.ndarray | None = None, sanitize: bool = False) -> None:
        """Runs MCUF_MLP on int8 tokens [N, D] (any shape of N·D elements), overwriting them."""
        tokens, scratch = self._buffers(tokens, scratch, sanitize)
        if tokens.size % self.depth:
            raise McuformerError(f"tokens: a multiple of {self.depth} elements is required, got {tokens.size}")
        status = load(sanitize).mcuf_mlp(ctypes.byref(self.params), p8(tokens), tokens.size // self.depth,
                                         p8(scratch))
        if status != MCUF_OK:
            raise McuformerError(f"MCUF_MLP: {_RSQRT_FAILURE}")


class AttentionKernel(_TokenKernel):
    """One attention subgraph as MCUF_ATTENTION parameters (scratch: K, V and one row's)."""

    _SIZE = "mcuf_attention_get_buffer_size"

    def run(self, tokens: np.ndarray, scratch: np.ndarray | None = None, sanitize: bool = False) -> None:
        """Runs MCUF_ATTENTION on int8 tokens [N, D] (any shape of N·D elements), overwriting them."""
        tokens, scratch = self._buffers(tokens, scratch, sanitize)
        if tokens.size != self.num_tokens * self.depth:
            raise McuformerError(f"tokens: {self.num_tokens}x{self.depth} elements are required, got "
                                 f"{tokens.size}")
        if load(sanitize).mcuf_attention(ctypes.byref(self.params), p8(tokens), p8(scratch)) != MCUF_OK:
            raise McuformerError(f"MCUF_ATTENTION: {_RSQRT_FAILURE}, or a softmax row's sum of exponentials "
                                 f"reaches 512, where TFLM's TFLITE_CHECK fails")


@dataclass
class PatchEmbedKernel:
    """One patch-embedding subgraph as MCUF_PATCH_EMBED parameters, with the constant arrays they point to."""

    params: PatchEmbedParams
    input_tensor: int  # the image [1, H, W, C]
    output_tensor: int  # the position ADD's output (tokens [1, N, D])
    image_bytes: int  # H·W·C
    num_tokens: int
    depth: int
    _arrays: list = field(default_factory=list, repr=False)

    def buffer_size(self, sanitize: bool = False) -> int:
        """mcuf_patch_embed_get_buffer_size: one patch row of tokens, (W/P)·D bytes (checked: check_params)."""
        check_params(self.params, sanitize)
        return load(sanitize).mcuf_patch_embed_get_buffer_size(ctypes.byref(self.params))

    def output_offset(self, sanitize: bool = False) -> int:
        """mcuf_patch_embed_output_offset: where the tokens go, in bytes from the image's start, when they
        share memory with it: min(0, H·W·C - N·D) (the tokens end where the image ends when they are the
        larger, else start where it starts); image and tokens then span max(H·W·C, N·D) bytes."""
        return load(sanitize).mcuf_patch_embed_output_offset(ctypes.byref(self.params))

    def run(self, image: np.ndarray, tokens: np.ndarray, scratch: np.ndarray | None = None,
            sanitize: bool = False) -> None:
        """Embeds int8 `image` (H·W·C elements, NHWC order) into int8 `tokens` (N·D elements).

        The two may be views of one buffer, `tokens` starting output_offset() bytes from `image` (or at
        any other placement mcuf/patch_embed.h allows); the C refuses any other overlap.
        """
        image = int8_buffer("image", image)
        tokens = int8_buffer("tokens", tokens, writable=True)
        if image.size != self.image_bytes or tokens.size != self.num_tokens * self.depth:
            raise McuformerError(f"image and tokens: {self.image_bytes} and {self.num_tokens * self.depth} "
                                 f"elements are required, got {image.size} and {tokens.size}")
        scratch = _scratch(scratch, self.buffer_size(sanitize))
        if load(sanitize).mcuf_patch_embed(ctypes.byref(self.params), p8(image), p8(tokens),
                                           p8(scratch)) != MCUF_OK:
            raise McuformerError(f"MCUF_PATCH_EMBED: the tokens overlap the image at byte offset "
                                 f"{tokens.ctypes.data - image.ctypes.data}, where they would overwrite "
                                 f"pixels not yet read (mcuf/patch_embed.h; output_offset() is "
                                 f"{self.output_offset(sanitize)})")


class _Subgraph:
    """The operators of one fused kernel's subgraph, taken in order, with the checks each step needs.

    A RESHAPE that keeps the last axis moves no byte of a token: it is skipped, its output an alias
    of its input (`canonical`), wherever the converter placed it. Any other RESHAPE is an operator
    the caller takes explicitly.
    """

    def __init__(self, graph, ops, kernel: str):
        self.graph, self.ops, self.kernel, self.position = graph, list(ops), kernel, 0
        self.aliases: dict = {}
        self.arrays: list = []

    def fail(self, op, message: str):
        where = f"operator {op.index} ({op.opcode})" if op is not None else "the subgraph"
        raise McuformerError(f"{self.kernel}: {where}: {message}")

    def canonical(self, index: int) -> int:
        return self.aliases.get(index, index)

    def peek(self):
        """The next operator that is not a last-axis-keeping RESHAPE (taken as aliases), or None."""
        while self.position < len(self.ops) and self.ops[self.position].opcode == "RESHAPE":
            op = self.ops[self.position]
            source, target = self.graph.tensor(op.inputs[0]), self.graph.tensor(op.outputs[0])
            if not source.shape or not target.shape or source.shape[-1] != target.shape[-1]:
                break
            self.aliases[op.outputs[0]] = self.canonical(op.inputs[0])
            self.position += 1
        return self.ops[self.position] if self.position < len(self.ops) else None

    def take(self, opcode: str):
        op = self.peek()
        if op is None or op.opcode != opcode:
            found = "the end of the subgraph" if op is None else f"operator {op.index} ({op.opcode})"
            raise McuformerError(f"{self.kernel}: {opcode} expected at position {self.position}, found {found}")
        self.position += 1
        return op

    def reads(self, op, expected: int) -> None:
        """The unary operator reads tensor `expected` (or an alias of it)."""
        if self.canonical(op.inputs[0]) != expected:
            self.fail(op, f"reads tensor {op.inputs[0]}, not {expected}")

    def rows(self, op, index: int, width: int, tokens: int) -> None:
        """Tensor `index` holds `tokens` rows of `width` values along its last axis."""
        tensor = self.graph.tensor(index)
        if not tensor.shape or tensor.shape[-1] != width or int(np.prod(tensor.shape)) != tokens * width:
            self.fail(op, f"tensor {index} is {list(tensor.shape)}, {tokens} rows of {width} expected")

    def shape(self, op, index: int, expected: tuple) -> None:
        if tuple(self.graph.tensor(index).shape) != tuple(expected):
            self.fail(op, f"tensor {index} is {list(self.graph.tensor(index).shape)}, {list(expected)} expected")

    def is_constant(self, index: int) -> bool:
        return self.graph.tensor(index).data is not None

    def constant(self, op, index: int, size: int, rows: int = 1):
        """Pointer to tensor `index`, an int8 constant of `rows` rows of `size` values along its last axis
        (or, for one row, of one value when size is 1)."""
        tensor = self.graph.tensor(index)
        if tensor.data is None or tensor.dtype != np.int8 or tensor.data.size != rows * size or (
                rows * size > 1 and tensor.shape[-1] != size):
            self.fail(op, f"tensor {index} must be an int8 constant of {rows}x{size} value(s) along its last axis")
        array = np.ascontiguousarray(tensor.data, np.int8).reshape(-1)
        self.arrays.append(array)
        return array.ctypes.data_as(P8)

    def binary(self, op, stream: int, other_ok, commutative: bool = True) -> tuple[bool, int]:
        """(swapped, other operand) of a binary operator, one of whose inputs is the token stream."""
        first, second = op.inputs[:2]
        if self.canonical(first) == stream and other_ok(second):
            return False, second
        if commutative and self.canonical(second) == stream and other_ok(first):
            return True, first
        self.fail(op, f"operands {first}, {second} are not the expected (token stream {stream}, operand) pair")

    def is_output_of(self, op):
        return lambda index: self.canonical(index) == op.outputs[0]

    def bias(self, op, outputs: int):
        """Pointer to the operator's int32 bias of `outputs` values, or None where it has none."""
        if len(op.inputs) <= 2 or op.inputs[2] < 0:
            return None
        bias = self.graph.tensor(op.inputs[2])
        if bias.data is None or bias.dtype != np.int32 or bias.data.size != outputs:
            self.fail(op, f"a constant int32 bias of {outputs} values expected")
        return int32_array(bias.data.reshape(-1), self.arrays)

    def fully_connected(self, input_index: int, width: int, tokens: int) -> tuple:
        """(FcLayer, output tensor, output width) of the next FULLY_CONNECTED, which reads input_index."""
        op = self.take("FULLY_CONNECTED")
        self.reads(op, input_index)
        self.rows(op, op.inputs[0], width, tokens)
        weights = self.graph.tensor(op.inputs[1])
        if weights.data is None or len(weights.shape) != 2 or weights.shape[1] != width:
            self.fail(op, f"constant weights [outputs, {width}] expected, got {list(weights.shape)}")
        outputs = weights.shape[0]
        self.rows(op, op.outputs[0], outputs, tokens)
        pointer, bits = weights_array(weights, self.arrays)
        layer = FcLayer(fc_params(prepare(self.graph, op), self.arrays, bits), pointer, None, width, outputs)
        layer.bias = self.bias(op, outputs)
        return layer, op.outputs[0], outputs

    def linear(self, input_index: int, width: int, tokens: int) -> tuple:
        """(Linear, output tensor, output width): one FULLY_CONNECTED, or a low-rank pair."""
        first, output, width = self.fully_connected(input_index, width, tokens)
        layers = [first]
        following = self.peek()
        if following is not None and following.opcode == "FULLY_CONNECTED" and \
                self.canonical(following.inputs[0]) == output:
            second, output, width = self.fully_connected(output, width, tokens)
            layers.append(second)
        return Linear(len(layers), (FcLayer * 2)(*layers)), output, width

    def mean(self, input_index: int, depth: int, tokens: int):
        """(output tensor, MeanParams) of the next MEAN, over the last axis of input_index."""
        op = self.take("MEAN")
        self.reads(op, input_index)
        self.rows(op, op.inputs[0], depth, tokens)
        params = prepare(self.graph, op)
        if params.axes != (len(self.graph.tensor(op.inputs[0]).shape) - 1,):
            self.fail(op, f"reduces axes {list(params.axes)}, only the last axis is per token")
        self.rows(op, op.outputs[0], 1, tokens)
        return op.outputs[0], mean_params(params)

    def tokens(self, name: str) -> tuple[int, int, int]:
        """(x, N, D) of a block whose first operator is its LayerNorm's MEAN, reading tokens x [N, D]."""
        first = self.peek()
        if first is None or first.opcode != "MEAN":
            self.fail(first, f"{name} subgraph starts with the LayerNorm's MEAN")
        x = self.canonical(first.inputs[0])
        x_shape = self.graph.tensor(x).shape
        depth = x_shape[-1] if x_shape else 0
        return x, int(np.prod(x_shape)) // max(depth, 1), depth

    def layer_norm(self, x: int, depth: int, tokens: int) -> tuple:
        """(LayerNorm, output tensor) of the next LayerNorm on tokens x: MEAN, SUB, MUL, MEAN, ADD, RSQRT,
        MUL, then MUL(gamma) and ADD(beta) unless the converter folded an identity away."""
        graph, ln = self.graph, LayerNorm()
        mean, ln.mean = self.mean(x, depth, tokens)
        op = self.take("SUB")
        self.binary(op, x, lambda index: self.canonical(index) == mean, commutative=False)
        self.rows(op, op.outputs[0], depth, tokens)
        ln.centre, centred = add_params(prepare(graph, op)), op.outputs[0]
        op = self.take("MUL")
        if {self.canonical(index) for index in op.inputs[:2]} != {centred}:
            self.fail(op, f"MUL({centred}, {centred}) expected")
        ln.square = mul_params(prepare(graph, op))
        variance, ln.variance = self.mean(op.outputs[0], depth, tokens)
        op = self.take("ADD")
        swapped, epsilon = self.binary(op, variance, self.is_constant)
        ln.epsilon, ln.add_epsilon = self.constant(op, epsilon, 1), add_params(prepare(graph, op), swapped)
        rsqrt_op = self.take("RSQRT")
        self.reads(rsqrt_op, op.outputs[0])
        self.rows(rsqrt_op, rsqrt_op.outputs[0], 1, tokens)
        ln.rsqrt = rsqrt_params(prepare(graph, rsqrt_op))
        op = self.take("MUL")
        swapped, _ = self.binary(op, centred, self.is_output_of(rsqrt_op))
        ln.normalize, normalized = mul_params(prepare(graph, op), swapped), op.outputs[0]
        self.rows(op, normalized, depth, tokens)
        for opcode in ("MUL", "ADD"):  # gamma, beta: absent where the converter folded an identity away
            following = self.peek()
            if following is None or following.opcode != opcode or \
                    normalized not in {self.canonical(index) for index in following.inputs[:2]}:
                continue
            op = self.take(opcode)
            swapped, constant = self.binary(op, normalized, self.is_constant)
            params, pointer = prepare(graph, op), self.constant(op, constant, depth)
            if opcode == "MUL":
                ln.scale, ln.gamma = mul_params(params, swapped), pointer
            else:
                ln.offset, ln.beta = add_params(params, swapped), pointer
            normalized = op.outputs[0]
            self.rows(op, normalized, depth, tokens)
        return ln, normalized

    def residual(self, x: int, branch: int, width: int, depth: int, tokens: int, what: str):
        """(AddParams, output tensor) of the closing ADD(x, branch), which ends the subgraph."""
        op = self.take("ADD")
        if width != depth:
            self.fail(op, f"{what} has {width} outputs, the tokens {depth} channels")
        swapped, _ = self.binary(op, x, lambda index: self.canonical(index) == branch)
        self.rows(op, op.outputs[0], depth, tokens)
        if self.peek() is not None:
            self.fail(self.peek(), "follows the residual ADD, which ends the subgraph")
        self.check_internal(op.outputs[0])
        return add_params(prepare(self.graph, op), swapped), op.outputs[0]

    def check_internal(self, output_tensor: int) -> None:
        """Every tensor the subgraph writes, except its output, is read only inside it."""
        inside = {op.index for op in self.ops}
        for op in self.ops:
            for index in op.outputs:
                readers = {reader.index for reader in self.graph.consumers(index)}
                if index != output_tensor and (readers - inside or index in self.graph.outputs):
                    self.fail(op, f"its output {index} is also read outside the subgraph")


def mlp_kernel(graph, ops) -> MlpKernel:
    """MCUF_MLP parameters of one MLP subgraph (`ops`, in order) of a graph read by tflite_graph.read_model.

    The subgraph: LN (MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, then MUL(gamma) and ADD(beta) unless the
    converter folded an identity away), fc1 (one FULLY_CONNECTED or a low-rank pair), QuickGELU (MUL,
    LOGISTIC, MUL), fc2 (one or two FULLY_CONNECTED), the residual ADD, and anywhere RESHAPEs that keep
    the last axis. Anything else raises McuformerError naming the operator.
    """
    sub = _Subgraph(graph, ops, "MCUF_MLP")
    x, tokens, depth = sub.tokens("an MLP")
    p = MlpParams(depth=depth)
    p.ln, normalized = sub.layer_norm(x, depth, tokens)

    p.fc1, hidden, p.hidden = sub.linear(normalized, depth, tokens)
    op = sub.take("MUL")
    swapped, coefficient = sub.binary(op, hidden, sub.is_constant)
    p.gelu_coefficient, p.gelu_scale = sub.constant(op, coefficient, 1), mul_params(prepare(graph, op), swapped)
    logistic_op = sub.take("LOGISTIC")
    sub.reads(logistic_op, op.outputs[0])
    p.gelu_sigmoid = logistic_params(prepare(graph, logistic_op))
    op = sub.take("MUL")
    swapped, _ = sub.binary(op, hidden, sub.is_output_of(logistic_op))
    sub.rows(op, op.outputs[0], p.hidden, tokens)
    p.gelu_gate = mul_params(prepare(graph, op), swapped)

    p.fc2, y, width = sub.linear(op.outputs[0], p.hidden, tokens)
    p.residual, output = sub.residual(x, y, width, depth, tokens, "fc2")
    return MlpKernel(p, x, output, tokens, depth, sub.arrays)


def attention_kernel(graph, ops) -> AttentionKernel:
    """MCUF_ATTENTION parameters of one attention subgraph (`ops`, in order) of a graph read by
    tflite_graph.read_model.

    The subgraph: LN (as in mlp_kernel), qkv (one FULLY_CONNECTED or a low-rank pair), RESHAPE to
    [1, N, 3, h, hd], TRANSPOSE [2, 0, 3, 1, 4], UNPACK (num 3, axis 0) into q, k, v [1, h, N, hd],
    BATCH_MATMUL(q, k, adj_y), SOFTMAX, BATCH_MATMUL(probs, v), TRANSPOSE [0, 2, 1, 3] and RESHAPE to
    [N, h·hd] (optional when h = 1), proj (one or two FULLY_CONNECTED), the residual ADD, and RESHAPEs
    that keep the last axis anywhere. These data movements are what makes q, k and v the column slices
    [0, h·hd), [h·hd, 2h·hd), [2h·hd, 3h·hd) of the qkv output, head-major within each, as the C reads
    them; every one is checked. Anything else raises McuformerError naming the operator.
    """
    sub = _Subgraph(graph, ops, "MCUF_ATTENTION")
    x, tokens, depth = sub.tokens("an attention")
    p = AttentionParams(tokens=tokens, depth=depth)
    p.ln, normalized = sub.layer_norm(x, depth, tokens)

    p.qkv, qkv, width = sub.linear(normalized, depth, tokens)
    op = sub.take("RESHAPE")
    sub.reads(op, qkv)
    shape = tuple(int(n) for n in graph.tensor(op.outputs[0]).shape)
    if len(shape) != 5 or shape[:3] != (1, tokens, 3) or 3 * shape[3] * shape[4] != width:
        sub.fail(op, f"{list(shape)} is not [1, {tokens}, 3, heads, head_dim] of the {width} qkv columns")
    p.heads, p.head_dim = heads, head_dim = shape[3], shape[4]
    reshaped = op.outputs[0]
    op = sub.take("TRANSPOSE")
    sub.reads(op, reshaped)
    if prepare(graph, op) != (2, 0, 3, 1, 4):
        sub.fail(op, f"permutation {list(prepare(graph, op))}, [2, 0, 3, 1, 4] expected")
    transposed = op.outputs[0]
    op = sub.take("UNPACK")
    sub.reads(op, transposed)
    if len(op.outputs) != 3 or prepare(graph, op) != 0:
        sub.fail(op, "3 outputs along axis 0 expected")
    head_rows = (1, heads, tokens, head_dim)
    for index in op.outputs:
        sub.shape(op, index, head_rows)
    q, k, v = op.outputs

    op = sub.take("BATCH_MATMUL")
    if [sub.canonical(index) for index in op.inputs[:2]] != [q, k]:
        sub.fail(op, f"BATCH_MATMUL({q}, {k}) expected")
    params = prepare(graph, op)
    if params.adj_x or not params.adj_y:
        sub.fail(op, "q·kᵀ expected: adj_x false, adj_y true")
    sub.shape(op, op.outputs[0], (1, heads, tokens, tokens))
    p.scores = batch_matmul_params(params)
    softmax_op = sub.take("SOFTMAX")
    sub.reads(softmax_op, op.outputs[0])
    sub.shape(softmax_op, softmax_op.outputs[0], (1, heads, tokens, tokens))
    p.softmax = softmax_params(prepare(graph, softmax_op))
    op = sub.take("BATCH_MATMUL")
    if [sub.canonical(index) for index in op.inputs[:2]] != [softmax_op.outputs[0], v]:
        sub.fail(op, f"BATCH_MATMUL({softmax_op.outputs[0]}, {v}) expected")
    params = prepare(graph, op)
    if params.adj_x or params.adj_y:
        sub.fail(op, "probs·v expected: adj_x and adj_y false")
    sub.shape(op, op.outputs[0], head_rows)
    p.context, context = batch_matmul_params(params), op.outputs[0]

    following = sub.peek()
    if following is not None and following.opcode == "TRANSPOSE":
        op = sub.take("TRANSPOSE")
        sub.reads(op, context)
        if prepare(graph, op) != (0, 2, 1, 3):
            sub.fail(op, f"permutation {list(prepare(graph, op))}, [0, 2, 1, 3] expected")
        context = op.outputs[0]
        if sub.peek() is not None and sub.peek().opcode == "RESHAPE":  # h > 1: [1, N, h, hd] -> [N, h·hd]
            op = sub.take("RESHAPE")
            sub.reads(op, context)
            context = op.outputs[0]
    elif heads != 1:
        sub.fail(following, f"{heads} heads: TRANSPOSE [0, 2, 1, 3] of the context expected before proj")
    p.proj, y, width = sub.linear(context, heads * head_dim, tokens)
    p.residual, output = sub.residual(x, y, width, depth, tokens, "proj")
    return AttentionKernel(p, x, output, tokens, depth, sub.arrays)


def patch_embed_kernel(graph, ops) -> PatchEmbedKernel:
    """MCUF_PATCH_EMBED parameters of one patch-embedding subgraph (`ops`, in order) of a graph read by
    tflite_graph.read_model: CONV_2D (kernel = stride = P, VALID, no dilation) on an int8 image
    [1, H, W, C], RESHAPE to [1, N, D], ADD of a constant position table of N·D values."""
    sub = _Subgraph(graph, ops, "MCUF_PATCH_EMBED")
    conv = sub.take("CONV_2D")
    image, weights = graph.tensor(conv.inputs[0]), graph.tensor(conv.inputs[1])
    if image.dtype != np.int8 or len(image.shape) != 4 or image.shape[0] != 1:
        sub.fail(conv, f"an int8 image [1, H, W, C] expected, got {image.dtype} {list(image.shape)}")
    _, height, width, channels = image.shape
    if weights.data is None or weights.dtype != np.int8 or len(weights.shape) != 4 or \
            weights.shape[1] != weights.shape[2] or weights.shape[3] != channels:
        sub.fail(conv, f"constant int8 weights [D, P, P, {channels}] expected, got {list(weights.shape)}")
    depth, patch = weights.shape[0], weights.shape[1]
    options = conv.options
    if (options["padding"], options["stride_h"], options["stride_w"], options["dilation_hfactor"],
            options["dilation_wfactor"]) != (PADDING_VALID, patch, patch, 1, 1):
        sub.fail(conv, "VALID with stride = kernel and no dilation expected")
    if height % patch or width % patch:
        sub.fail(conv, f"image {height}x{width} is not a whole number of {patch}x{patch} patches")
    grid = (height // patch, width // patch)
    tokens = grid[0] * grid[1]
    sub.shape(conv, conv.outputs[0], (1, *grid, depth))
    pointer, bits = weights_array(weights, sub.arrays)
    p = PatchEmbedParams(height, width, channels, patch, depth, fc_params(prepare(graph, conv), sub.arrays, bits),
                         pointer, sub.bias(conv, depth))
    add = sub.take("ADD")  # the RESHAPE to [1, N, D] keeps the last axis: an alias
    swapped, table = sub.binary(add, conv.outputs[0], sub.is_constant)
    p.position, p.position_table = add_params(prepare(graph, add), swapped), sub.constant(add, table, depth, tokens)
    sub.rows(add, add.outputs[0], depth, tokens)
    if sub.peek() is not None:
        sub.fail(sub.peek(), "follows the position ADD, which ends a patch embedding")
    sub.check_internal(add.outputs[0])
    return PatchEmbedKernel(p, conv.inputs[0], add.outputs[0], height * width * channels, tokens, depth,
                            sub.arrays)
