"""What the exported and the compiled .tflite hold, counted from the `SubnetConfig`: tensors, operators, bytes.

`graph_counts` counts the unfused model (the graph `unfused_plan.unfused_net` rebuilds): tensors,
operators, operands, quantisation channels, weight/bias/constant bytes (weights in the form's
width: int8, or packed INT4), and what TFLM's persistent tail grows with (output channels of
per-channel kernels, bytes of BATCH_MATMUL operands it transposes, INT4 filters it unpacks).
`fused_graph_counts` counts the compiled model (`fused_plan.fused_net`): the same, the MCUF ops'
per-channel arrays in TFLM and the exact length of their flexbuffer options
(`mcuf_options`). Both are exact on real exports of both presets in every `ExportForm` (tests:
test_memory_model); `persistent` and `flash` turn them into bytes.

Speed: both are cached per block (its dims, ratios and form) and summed per config.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from mcuformer_tf.memory.form import QAT, ExportForm
from mcuformer_tf.memory.mcuf_options import attention_options, mlp_options, patch_embed_options
from mcuformer_tf.memory.net import align, check_config
from mcuformer_tf.nas.search_space import HEAD_DIM, LinearShape, SubnetConfig, keeps_dense, low_rank, mlp_hidden
from mcuformer_tf.tflm.arena_plan import ALIGNMENT


@dataclass(frozen=True)
class GraphCounts:
    """What the exported .tflite holds, counted from the config (checked against real exports)."""

    tensors: int  # activations and constants
    operators: int
    operands: int  # operator inputs and outputs, omitted optional inputs left out
    channels: int  # output channels of CONV_2D and per-channel FULLY_CONNECTED kernels
    transposed: int  # bytes of BATCH_MATMUL right operands TFLM transposes (adj_y false)
    weights: int  # bytes of the CONV_2D and FULLY_CONNECTED kernels (int8, or packed INT4)
    biases: int  # int32
    other_constants: int  # position table, LayerNorm and QuickGELU constants, shapes, axes
    quantized: int  # quantisation channels: one per int8 tensor, one per weight/bias channel
    unpacked: int = 0  # INT4 filters stock TFLM unpacks into scratch (one request, one handle each)

    def __add__(self, other):
        return GraphCounts(*map(int.__add__, self.__dict__.values(), other.__dict__.values()))


def _linear_counts(shape, form: ExportForm) -> GraphCounts:
    """One linear: FC (x, kernel[, bias]) → y, or two with the bias on the second; its kernels
    and bias quantised per output channel (the float forms) or per tensor (QAT)."""
    per_channel = not form.qat
    kernels = [(shape.in_dim, shape.out_dim)] if shape.dense else [
        (shape.in_dim, shape.rank), (shape.rank, shape.out_dim)]
    bias = form.trained
    weights = sum(form.weight_bytes(i * o) for i, o in kernels)
    channels = sum(o for _, o in kernels) if per_channel else 0
    scales = channels if per_channel else len(kernels)
    return GraphCounts(
        tensors=2 * len(kernels) + bias, operators=len(kernels),
        operands=3 * len(kernels) + bias, channels=channels, transposed=0, weights=weights,
        biases=4 * shape.out_dim * bias, other_constants=0,
        quantized=len(kernels) + scales + (shape.out_dim if per_channel else 1) * bias,
        unpacked=len(kernels) * form.int4)


def _layer_norm_counts(n: int, d: int, affine: bool) -> GraphCounts:
    """MEAN SUB MUL MEAN ADD RSQRT MUL (+ gamma MUL, beta ADD); the axis and eps are shared."""
    ops = 7 + 2 * affine
    return GraphCounts(tensors=ops + 2 * affine, operators=ops, operands=20 + 6 * affine,
                       channels=0, transposed=0, weights=0, biases=0,
                       other_constants=2 * d * affine, quantized=ops + 2 * affine)


@functools.lru_cache(maxsize=None)
def _block_counts(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float,
                  form: ExportForm) -> GraphCounts:
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def shape(i, o):
        return LinearShape(i, o, low_rank(i, o, rank_ratio))

    def linear(i, o):
        return _linear_counts(shape(i, o), form)

    reshape = not shape(d, h).dense
    # RESHAPE TRANSPOSE UNPACK(3) BMM SOFTMAX BMM [TRANSPOSE RESHAPE] ADD, then the MLP's
    # MUL(1.702) LOGISTIC RESHAPE MUL ADD; constants (shapes, permutations) counted in _shared.
    split = 2 if heads > 1 else 0
    attention = GraphCounts(tensors=9 + split, operators=7 + split,
                            operands=21 + 3 * split, channels=0,
                            transposed=n * hd, weights=0, biases=0, other_constants=0,
                            quantized=9 + split)
    mlp = GraphCounts(tensors=4 + reshape, operators=4 + reshape, operands=11 + 3 * reshape,
                      channels=0, transposed=0, weights=0, biases=0, other_constants=0,
                      quantized=4 + reshape)
    return (_layer_norm_counts(n, d, form.affine(shape(d, 3 * hd).dense))
            + linear(d, 3 * hd) + attention + linear(hd, d)
            + _layer_norm_counts(n, d, form.affine(not reshape))
            + linear(d, h) + linear(h, d) + mlp)


def graph_counts(config: SubnetConfig, form: ExportForm = QAT) -> GraphCounts:
    """Tensors, operators and constant bytes of the exported model in the export form `form`."""
    check_config(config)
    n, d, p = config.num_tokens, config.embed_dim, config.patch_size
    total = GraphCounts(  # image, CONV_2D (+ kernel, bias), RESHAPE, position ADD (+ table)
        tensors=7, operators=3, operands=4 + 3 + 3, channels=d, transposed=0,
        weights=form.weight_bytes(p * p * 3 * d), biases=4 * d, other_constants=n * d, quantized=5 + 2 * d,
        unpacked=int(form.int4))
    blocks = [vars(_block_counts(n, d, heads, ratio, config.rank_ratio, form)).values()
              for heads, ratio in zip(config.num_heads, config.mlp_ratio)]
    total = GraphCounts(*map(sum, zip(vars(total).values(), *blocks)))  # one sum per field
    total += _layer_norm_counts(n, d, form.trained) + _linear_counts(
        LinearShape(d, config.num_classes, d), form) + GraphCounts(  # MEAN
            tensors=1, operators=1, operands=3, channels=0, transposed=0, weights=0, biases=0,
            other_constants=0, quantized=1)
    return total + _shared_constants(config, form)


@dataclass(frozen=True)
class FusedCounts:
    """What the compiled .tflite holds, counted from the config (checked against compiled exports).

    Per MCUF op the glue keeps one OpData; every FULLY_CONNECTED layer inside it and the patch
    embedding keep a multiplier and a shift per output channel (`channel_arrays`: those arrays'
    bytes, each rounded up to TFLM's 16), as TFLM does for per-channel weights whose scales differ.
    """

    tensors: int
    operators: int
    blocks: int  # MCUF_ATTENTION + MCUF_MLP pairs (the depth)
    channel_arrays: int  # bytes, see above
    classes: int  # per-channel output channels of the head's FULLY_CONNECTED (TFLM's arrays)
    data: int  # constant bytes (weights, biases, other constants; a shared buffer once)
    padding: int  # bytes after the constants and the offline plan up to 16-byte multiples
    quantized: int  # quantisation channels
    options: int  # bytes of the MCUF ops' custom options (flexbuffers)
    low_rank_qkv: int  # blocks whose qkv is a low-rank pair (two FULLY_CONNECTED layers)
    low_rank_proj: int
    low_rank_mlp: int  # fc1 and fc2 stay dense or not together (their shapes are transposed)
    multi_head: int  # MCUF_ATTENTION ops with more than one head
    trained: bool  # the trained form: biases, and LayerNorm gamma/beta unless folded away
    unpacked: int = 0  # INT4 filters of builtins (the head's FULLY_CONNECTED) TFLM unpacks into scratch


def _padding(*lengths) -> int:
    """Bytes that pad buffers of these lengths to the writer's 16-byte alignment."""
    return sum(-length % ALIGNMENT for length in lengths)


def _fused_linear(shape, form: ExportForm) -> tuple:
    """(constant tensors, constant bytes, their padding, quantisation channels, channel-array
    bytes) of one linear inside an MCUF op: its kernel(s) and, in the trained form, its bias
    (a per-tensor kernel, QAT's, needs no channel arrays: the glue keeps one multiplier)."""
    trained, per_channel = form.trained, not form.qat
    kernels = [(shape.in_dim, shape.out_dim)] if shape.dense else [
        (shape.in_dim, shape.rank), (shape.rank, shape.out_dim)]
    channels = [o for _, o in kernels] if per_channel else []
    lengths = [form.weight_bytes(i * o) for i, o in kernels] + [4 * shape.out_dim] * trained
    scales = sum(channels) + (shape.out_dim * trained if per_channel else len(kernels) + trained)
    return (len(kernels) + trained, sum(lengths), _padding(*lengths), scales,
            sum(align(8 * c) for c in channels))


@functools.lru_cache(maxsize=None)
def _fused_block_counts(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float,
                        form: ExportForm) -> tuple:
    """One MCUF_ATTENTION and one MCUF_MLP, their own constants and their two outputs: tensors,
    data, padding, quantized, channel_arrays, options, low_rank_qkv/proj/mlp, multi_head."""
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)
    shapes = [LinearShape(i, o, low_rank(i, o, rank_ratio))
              for i, o in ((d, 3 * hd), (hd, d), (d, h), (h, d))]
    linears = [_fused_linear(shape, form) for shape in shapes]
    affine = form.affine(shapes[0].dense) + form.affine(shapes[2].dense)
    return (sum(x[0] for x in linears) + 2 * affine + 2,
            sum(x[1] for x in linears) + 2 * d * affine,
            sum(x[2] for x in linears) + 2 * affine * _padding(d),
            sum(x[3] for x in linears) + 2 * affine + 2,
            sum(x[4] for x in linears),
            attention_options(n, d, heads, *shapes[:2], form)
            + mlp_options(n, d, h, *shapes[2:], form),
            int(not shapes[0].dense), int(not shapes[1].dense), int(not shapes[2].dense),
            int(heads > 1))



def fused_graph_counts(config: SubnetConfig, form: ExportForm = QAT) -> FusedCounts:
    """Tensors, operators, constant bytes and TFLM per-channel arrays of the compiled model.

    The compiled graph: MCUF_PATCH_EMBED (image, conv kernel and bias, position table), per
    block MCUF_ATTENTION and MCUF_MLP (their kernels, biases and LayerNorm gamma/beta, one
    LayerNorm epsilon and one QuickGELU factor shared by all, in one buffer: both quantise to
    127), then the head as exported (LayerNorm builtins, MEAN over tokens, FULLY_CONNECTED),
    in the export form `form`.
    """
    check_config(config)
    n, d, p, classes = config.num_tokens, config.embed_dim, config.patch_size, config.num_classes
    trained, head_scales = bool(form.trained), 1 if form.qat else classes
    # image, conv kernel and bias, position, tokens; epsilon, QuickGELU factor; LN axis, pool
    # axis, FC kernel (+ bias, gamma, beta); LN's 7 activations (+ 2), pooled, logits; QAT:
    # more tensors on that one byte's buffer (see _qat_constants)
    eps_tensors = _qat_constants(config.depth, form)
    tensors = 5 + 2 + (3 + 3 * trained) + (9 + 2 * trained) + eps_tensors
    patch_weights, head_weights = form.weight_bytes(p * p * 3 * d), form.weight_bytes(d * classes)
    data = (patch_weights + 4 * d + n * d  # patch embedding
            + 1  # epsilon and QuickGELU factor: one shared byte
            + 4 + 4 + head_weights + (4 * classes + 2 * d) * trained)  # head
    quantized = (1 + d + d + 1 + 1) + 2 + (head_scales + (head_scales + 2) * trained) + (
        9 + 2 * trained) + eps_tensors
    padding = _padding(patch_weights, 4 * d, n * d, 1, 4, 4, head_weights,
                       *[4 * classes, d, d] * trained)
    outside_blocks = (tensors, data, padding, quantized, align(8 * d),
                      patch_embed_options(config.image_size, p, d), 0, 0, 0, 0)
    blocks = [_fused_block_counts(n, d, heads, ratio, config.rank_ratio, form)
              for heads, ratio in zip(config.num_heads, config.mlp_ratio)]
    (tensors, data, padding, quantized, arrays, options, qkv, proj, mlp,
     multi) = map(sum, zip(outside_blocks, *blocks))
    return FusedCounts(tensors=tensors, operators=1 + 2 * config.depth + 9 + 2 * trained,
                       blocks=config.depth, channel_arrays=arrays,
                       classes=0 if form.qat else classes, data=data,
                       padding=padding + _padding(4 * (3 + tensors)), quantized=quantized,
                       options=options, low_rank_qkv=qkv, low_rank_proj=proj, low_rank_mlp=mlp,
                       multi_head=multi, trained=trained, unpacked=int(form.int4))


@functools.lru_cache(maxsize=None)
def _fc1(d: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(hidden width, whether fc1 stays dense)."""
    h = mlp_hidden(d, mlp_ratio)
    return h, keeps_dense(d, h, low_rank(d, h, rank_ratio))


def _qat_constants(depth: int, form: ExportForm) -> int:
    """Tensors a QAT export adds on the buffer of the byte 127 that the float form's LayerNorm
    epsilon and QuickGELU factor share: each LayerNorm's epsilon is quantised apart (2 * depth
    + 1 in all) and the factor is held twice (seen in every QAT export measured)."""
    return 2 * depth + 1 if form.qat else 0


def _shared_constants(config: SubnetConfig, form: ExportForm) -> GraphCounts:
    """Constants the converter shares: LayerNorm axis and eps, pooling axis, the tokens' shape,
    QuickGELU's 1.702, the qkv permutation; per distinct head count the qkv shape (and, with
    more than one head, the context shape and permutation); per distinct MLP width its shape;
    in a QAT export the tensors of `_qat_constants` too."""
    heads = set(config.num_heads)
    many = {h for h in heads if h > 1}
    widths = {width for width, dense in (_fc1(config.embed_dim, ratio, config.rank_ratio)
                                         for ratio in set(config.mlp_ratio)) if not dense}
    int32_words = (3 + 1 + 1 + 5 + 5 * len(heads) + 2 * len(many) + 4 * bool(many)
                   + 3 * len(widths))
    eps_tensors = _qat_constants(config.depth, form)
    count = 6 + len(heads) + len(many) + bool(many) + len(widths) + eps_tensors
    return GraphCounts(tensors=count, operators=0, operands=0, channels=0, transposed=0,
                       weights=0, biases=0, other_constants=4 * int32_words + 1,
                       quantized=2 + eps_tensors)
