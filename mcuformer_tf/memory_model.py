"""Arena and flash of a ViT from its `SubnetConfig` alone: no conversion, no TFLM, no TensorFlow.

The unfused model is the graph `convert.to_int8_tflite` writes for an extracted
subnet (DESIGN.md §4), rebuilt here tensor by tensor in the converter's order:
CONV_2D, RESHAPE and the position ADD; per block a LayerNorm as builtins
(MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, then gamma MUL and beta ADD), the
low-rank linears as one FULLY_CONNECTED (dense) or two (factors, the bias on
the second), attention as RESHAPE, TRANSPOSE, UNPACK, BATCH_MATMUL, SOFTMAX,
BATCH_MATMUL (+ TRANSPOSE and RESHAPE with more than one head), QuickGELU as
MUL, LOGISTIC, RESHAPE, MUL; the head a LayerNorm, MEAN over tokens and
FULLY_CONNECTED. Where the linear after a LayerNorm (qkv, fc1) stays dense the
converter folds gamma and beta into it, and a dense fc1 keeps [1, N, H], so
QuickGELU needs no RESHAPE. `trained=False` gives the fresh-weight form: the
converter drops gamma/beta and FC biases that are exactly 1 and 0 (two [N, D]
activations fewer per LayerNorm; the CONV_2D bias stays).

Exact (tests: real exports of both presets, TFLM's head in the wheel, the
compiler's plan): the unfused non-persistent arena (its activations and
MEAN's scratch through the planner `memory_report` replays, TFLM's
GreedyMemoryPlanner), the fused one (as `compiler.plan` plans it: MCUF ops in
place, the kernels' `*_get_buffer_size` as scratch), and `graph_counts`
(tensors, operators, weight/bias/constant bytes, quantisation channels).
Fitted on those counts: the unfused persistent tail (TFLM's, 64-bit host) and
the flash (the .tflite). The fused model's persistent tail needs the TFLM glue
of the MCUF ops, not written yet, and its flash the compiler's flexbuffer
options: both None.

Speed: the plans are cached per segment (a block half or the head, with the
offset of the residual tensor it writes) and per distinct fused scratch set;
the per-config work is a few dictionary look-ups per block. The caches grow
with the distinct blocks of a search space (thousands of entries at most).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from mcuformer_tf import memory_report
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory_report import PlannedBuffer, greedy_plan
from mcuformer_tf.search_space import (HEAD_DIM, LinearShape, SubnetConfig, keeps_dense,
                                       low_rank, mlp_hidden)

ALIGNMENT = memory_report.ALIGNMENT


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model in TFLM: arena = persistent + non_persistent; flash = the .tflite."""

    non_persistent: int
    persistent: int | None
    flash: int | None

    @property
    def arena(self) -> int | None:
        return None if self.persistent is None else self.persistent + self.non_persistent


@dataclass(frozen=True)
class MemoryEstimate:
    unfused: Footprint
    fused: Footprint


class _Net:
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
        """As `memory_report.planned_buffers`: tensors in index order, then scratch in op order."""
        first, last = [-1] * len(self.sizes), [-1] * len(self.sizes)
        first[0] = last[0] = 0
        for k, (inputs, outputs, _) in enumerate(self.ops):
            for t in outputs:
                first[t] = last[t] = k + 1
            for t in inputs:
                last[t] = k + 1
        last[-1] = len(self.ops)
        buffers = [PlannedBuffer(_align(s), first[t], last[t], tensor=t)
                   for t, s in enumerate(self.sizes)]
        for k, (_, _, scratch) in enumerate(self.ops):
            buffers += [PlannedBuffer(_align(s), k + 1, k + 1, operator=k) for s in scratch]
        return buffers


def _mean_scratch(out_elements: int) -> tuple:
    """reduce_common.cc for int8 over a rank-3 input and a one-element axis: accumulator, axes."""
    return (4 * out_elements, 12, 4)


def _layer_norm(net: _Net, x: int, n: int, d: int, affine: bool) -> int:
    """`affine`: gamma MUL and beta ADD kept (trained weights, and no dense FC to fold into)."""
    mean = net.one([x], n, _mean_scratch(n))
    centred = net.one([x, mean], n * d)
    square = net.one([centred, centred], n * d)
    variance = net.one([square], n, _mean_scratch(n))
    shifted = net.one([variance], n)
    inverse = net.one([shifted], n)
    out = net.one([centred, inverse], n * d)
    if affine:
        out = net.one([net.one([out], n * d)], n * d)
    return out


def _linear(net: _Net, x: int, n: int, shape) -> int:
    if not shape.dense:
        x = net.one([x], n * shape.rank)
    return net.one([x], n * shape.out_dim)


def _attention(net: _Net, x: int, config: SubnetConfig, layer: int, trained: bool) -> int:
    n, d, heads = config.num_tokens, config.embed_dim, config.num_heads[layer]
    shapes = config.linear_shapes(layer)
    hd = heads * HEAD_DIM
    normed = _layer_norm(net, x, n, d, trained and not shapes["qkv"].dense)
    qkv = _linear(net, normed, n, shapes["qkv"])
    split = net.one([net.one([qkv], 3 * n * hd)], 3 * n * hd)
    q, k, v = net.op([split], [n * hd] * 3)
    scores = net.one([net.one([q, k], heads * n * n)], heads * n * n)
    context = net.one([scores, v], n * hd)
    if heads > 1:
        context = net.one([net.one([context], n * hd)], n * hd)
    return net.one([x, _linear(net, context, n, shapes["proj"])], n * d)


def _mlp(net: _Net, x: int, config: SubnetConfig, layer: int, trained: bool) -> int:
    n, d, h = config.num_tokens, config.embed_dim, config.hidden_dim(layer)
    shapes = config.linear_shapes(layer)
    dense = shapes["fc1"].dense
    hidden = _linear(net, _layer_norm(net, x, n, d, trained and not dense), n, shapes["fc1"])
    gate = net.one([net.one([hidden], n * h)], n * h)
    if not dense:  # a dense FC keeps [1, N, H]; the factors' [N, H] is reshaped back
        gate = net.one([gate], n * h)
    activated = net.one([hidden, gate], n * h)
    return net.one([x, _linear(net, activated, n, shapes["fc2"])], n * d)


def _head(net: _Net, x: int, config: SubnetConfig, trained: bool) -> None:
    d = config.embed_dim
    pooled = net.one([_layer_norm(net, x, config.num_tokens, d, trained)], d, _mean_scratch(d))
    net.one([pooled], config.num_classes)


def _image_bytes(config: SubnetConfig) -> int:
    return config.image_size * config.image_size * 3


def unfused_net(config: SubnetConfig, trained: bool = True) -> _Net:
    """The exported int8 graph's activations (QAT/trained form; `trained=False`: fresh weights)."""
    n, d = config.num_tokens, config.embed_dim
    net = _Net(_image_bytes(config))
    tokens = net.one([net.one([0], n * d)], n * d)
    x = net.one([tokens], n * d)
    for layer in range(config.depth):
        x = _mlp(net, _attention(net, x, config, layer, trained), config, layer, trained)
    _head(net, x, config, trained)
    return net


@functools.lru_cache(maxsize=None)
def block_scratch(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(MCUF_ATTENTION, MCUF_MLP) scratch bytes of a block: the kernels' get_buffer_size
    (a linear's rank counts 0 where it stays dense)."""
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def rank(i, o):
        r = low_rank(i, o, rank_ratio)
        return 0 if keeps_dense(i, o, r) else r

    attention = 2 * n * hd + max(d, hd) + hd + max(d, n, rank(d, 3 * hd), rank(hd, d))
    return attention, max(h, d) + max(d, rank(d, h), rank(h, d))


def _body_scratch(config: SubnetConfig) -> list:
    n, d, r = config.num_tokens, config.embed_dim, config.rank_ratio
    return [s for heads, ratio in zip(config.num_heads, config.mlp_ratio)
            for s in block_scratch(n, d, heads, ratio, r)]


def fused_net(config: SubnetConfig, trained: bool = True, body_scratch=None) -> tuple:
    """The compiled graph's activations and its in-place links (input, output, output offset);
    `body_scratch`: the MCUF_ATTENTION/MCUF_MLP scratch sizes, in order (default: the config's)."""
    n, d = config.num_tokens, config.embed_dim
    image = _image_bytes(config)
    net = _Net(image)
    x = net.one([0], n * d, [config.grid * d])
    links = [(0, x, min(0, image - n * d))]
    for scratch in _body_scratch(config) if body_scratch is None else body_scratch:
        y = net.one([x], n * d, [scratch])
        links.append((x, y, 0))
        x = y
    _head(net, x, config, trained)
    return net, links


def _check(config) -> None:
    if not isinstance(config, SubnetConfig):
        raise McuformerError(f"the memory model needs a SubnetConfig, got {type(config).__name__}")
    sizes = {"image_size": config.image_size, "patch_size": config.patch_size,
             "embed_dim": config.embed_dim, "depth": config.depth,
             "num_classes": config.num_classes, "num_heads": min(config.num_heads, default=1),
             "mlp_ratio": min(config.mlp_ratio, default=1)}
    for name, value in sizes.items():
        if not value > 0:
            raise McuformerError(f"{name}: must be positive, got {value}")


def unfused_non_persistent_exact(config: SubnetConfig, trained: bool = True) -> int:
    """TFLM's head for the exported model: the greedy plan of all its activations and scratch."""
    _check(config)
    return greedy_plan(unfused_net(config, trained).buffers())


def _simulate(buffers, forced: dict) -> tuple:
    """GreedyMemoryPlanner's placement (as `memory_report.greedy_plan`) where the buffers at the
    positions in `forced` take their given offset when their turn comes: (offsets, plan size)."""
    offsets = [0] * len(buffers)
    order = sorted(reversed(range(len(buffers))), key=lambda k: -buffers[k].size)
    placed = []  # (offset, k), sorted by offset
    for k in order:
        b = buffers[k]
        if k in forced:
            candidate = forced[k]
        else:
            candidate = 0
            for offset, j in placed:
                other = buffers[j]
                if other.first > b.last or b.first > other.last:
                    continue
                if offset - candidate >= b.size:
                    break
                candidate = max(candidate, offset + other.size)
        offsets[k] = candidate
        position = next((i for i, (o, _) in enumerate(placed) if o > candidate), len(placed))
        placed.insert(position, (candidate, k))
    return offsets, max(o + b.size for o, b in zip(offsets, buffers))


_SEGMENTS: dict = {}  # segment key -> its buffers (tensor 0 its left cut, the last its right)
_PLANS: dict = {}  # (segment key, right cut's offset) -> (left cut's offset, the segment's top)


def _segment(key, build) -> list:
    if key not in _SEGMENTS:
        _SEGMENTS[key] = build().buffers()
    return _SEGMENTS[key]


def _segment_plan(key, build, right: int | None) -> tuple:
    if (key, right) not in _PLANS:
        buffers = _segment(key, build)
        tensors = sum(1 for b in buffers if b.tensor is not None)
        offsets, top = _simulate(buffers, {} if right is None else {tensors - 1: right})
        _PLANS[key, right] = offsets[0], top
    return _PLANS[key, right]


def _segments(config: SubnetConfig, trained: bool) -> list:
    """(key, builder) of the unfused graph's segments, last first. A segment's left cut is the
    residual stream tensor it reads (alive throughout it) and its right cut the one it writes."""
    n, d, size = config.num_tokens, config.embed_dim, config.num_tokens * config.embed_dim

    def block(kind, layer):
        def build():
            net = _Net(size)
            (_attention if kind == "attention" else _mlp)(net, 0, config, layer, trained)
            return net
        return build

    def head():
        net = _Net(size)
        _head(net, 0, config, trained)
        return net

    def embed():
        net = _Net(_image_bytes(config))
        net.one([net.one([net.one([0], size)], size)], size)
        return net

    segments = [(("embed", config.image_size, n, d), embed)]
    for layer in range(config.depth):
        segments.append((("attention", n, d, config.num_heads[layer], config.rank_ratio, trained),
                         block("attention", layer)))
        segments.append((("mlp", n, d, config.mlp_ratio[layer], config.rank_ratio, trained),
                         block("mlp", layer)))
    segments.append((("head", n, d, config.num_classes, trained), head))
    return segments[::-1]


def unfused_non_persistent(config: SubnetConfig, trained: bool = True) -> int:
    """TFLM's head for the exported model, segment by segment: `unfused_non_persistent_exact`.

    A buffer's offset depends only on the buffers alive with it that the planner placed
    before it. A segment's buffers live with its own and its two cuts only. A cut meets the
    segment that writes it only at the residual ADD, where the other buffers alive (the previous
    cut and the linear's output) are [N, D] tensors of lower index, which the planner places
    after it. So the offset of a segment's right cut fixes its plan and its left cut's offset:
    the segments are planned from the last, each plan cached by (segment, right offset). The
    tests check the result equals the whole-graph plan on random configs of both presets.
    """
    _check(config)
    right, top = None, 0
    for key, build in _segments(config, trained):
        right, segment_top = _segment_plan(key, build, right)
        top = max(top, segment_top)
    return top


def _compiler_plan(net: _Net, links) -> int:
    """`compiler.plan.plan` on a buffer list: tensors packed with and without the scratch, TFLM
    placing the scratch around them; the smaller arena."""
    from mcuformer_tf.compiler.plan import pack

    best, buffers = None, net.buffers()
    for with_scratch in (True, False):
        trial = [replace(b) for b in buffers if with_scratch or b.tensor is not None]
        pack(trial, links)
        offsets = {b.tensor: b.offset for b in trial if b.tensor is not None}
        size = greedy_plan([replace(b, offline_offset=offsets.get(b.tensor), offset=-1)
                            for b in buffers])
        best = size if best is None else min(best, size)
    return best


def fused_non_persistent_exact(config: SubnetConfig, trained: bool = True) -> int:
    """The compiler's non-persistent arena for the fused model, from the whole buffer list."""
    _check(config)
    return _compiler_plan(*fused_net(config, trained))


@functools.lru_cache(maxsize=None)
def _fused_cached(image_size: int, patch_size: int, embed_dim: int, num_classes: int,
                  trained: bool, body: tuple) -> int:
    head = SubnetConfig(image_size, patch_size, 1.0, embed_dim, 1, (1,), (1.0,), num_classes)
    return _compiler_plan(*fused_net(head, trained, body))


def fused_non_persistent(config: SubnetConfig, trained: bool = True) -> int:
    """The fused model's non-persistent arena; equals `fused_non_persistent_exact`.

    Each MCUF_ATTENTION/MCUF_MLP scratch is alive alone beside the tokens (one in-place piece,
    at one offset through the body), so two of equal size meet the same obstacles and take the
    same offset: the plan of the distinct sizes, in increasing order, is the plan (cached).
    """
    _check(config)
    body = tuple(sorted(set(_body_scratch(config))))
    return _fused_cached(config.image_size, config.patch_size, config.embed_dim,
                         config.num_classes, trained, body)


@dataclass(frozen=True)
class GraphCounts:
    """What the exported .tflite holds, counted from the config (checked against real exports)."""

    tensors: int  # activations and constants
    operators: int
    operands: int  # operator inputs and outputs, omitted optional inputs left out
    channels: int  # output channels of CONV_2D and FULLY_CONNECTED (per-channel quantised)
    transposed: int  # bytes of BATCH_MATMUL right operands TFLM transposes (adj_y false)
    weights: int  # int8 kernels of CONV_2D and FULLY_CONNECTED
    biases: int  # int32
    other_constants: int  # position table, LayerNorm and QuickGELU constants, shapes, axes
    quantized: int  # quantisation channels: one per int8 tensor, one per weight/bias channel

    def __add__(self, other):
        return GraphCounts(*map(int.__add__, self.__dict__.values(), other.__dict__.values()))


def _linear_counts(shape, trained: bool) -> GraphCounts:
    """One linear: FC (x, kernel[, bias]) → y, or two with the bias on the second."""
    kernels = [(shape.in_dim, shape.out_dim)] if shape.dense else [
        (shape.in_dim, shape.rank), (shape.rank, shape.out_dim)]
    bias = trained
    weights = sum(i * o for i, o in kernels)
    channels = sum(o for _, o in kernels)
    return GraphCounts(
        tensors=2 * len(kernels) + bias, operators=len(kernels),
        operands=3 * len(kernels) + bias, channels=channels, transposed=0, weights=weights,
        biases=4 * shape.out_dim * bias, other_constants=0,
        quantized=len(kernels) + channels + shape.out_dim * bias)


def _layer_norm_counts(n: int, d: int, affine: bool) -> GraphCounts:
    """MEAN SUB MUL MEAN ADD RSQRT MUL (+ gamma MUL, beta ADD); the axis and eps are shared."""
    ops = 7 + 2 * affine
    return GraphCounts(tensors=ops + 2 * affine, operators=ops, operands=20 + 6 * affine,
                       channels=0, transposed=0, weights=0, biases=0,
                       other_constants=2 * d * affine, quantized=ops + 2 * affine)


@functools.lru_cache(maxsize=None)
def _block_counts(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float,
                  trained: bool) -> GraphCounts:
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def shape(i, o):
        return LinearShape(i, o, low_rank(i, o, rank_ratio))

    def linear(i, o):
        return _linear_counts(shape(i, o), trained)

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
    return (_layer_norm_counts(n, d, trained and not shape(d, 3 * hd).dense) + linear(d, 3 * hd)
            + attention + linear(hd, d) + _layer_norm_counts(n, d, trained and reshape)
            + linear(d, h) + linear(h, d) + mlp)


def graph_counts(config: SubnetConfig, trained: bool = True) -> GraphCounts:
    """Tensors, operators and constant bytes of the exported model (`trained=False`: fresh)."""
    _check(config)
    n, d, p = config.num_tokens, config.embed_dim, config.patch_size
    total = GraphCounts(  # image, CONV_2D (+ kernel, bias), RESHAPE, position ADD (+ table)
        tensors=7, operators=3, operands=4 + 3 + 3, channels=d, transposed=0,
        weights=p * p * 3 * d, biases=4 * d, other_constants=n * d, quantized=5 + 2 * d)
    for heads, ratio in zip(config.num_heads, config.mlp_ratio):
        total += _block_counts(n, d, heads, ratio, config.rank_ratio, trained)
    total += _layer_norm_counts(n, d, trained) + _linear_counts(
        LinearShape(d, config.num_classes, d), trained) + GraphCounts(  # MEAN over tokens
            tensors=1, operators=1, operands=3, channels=0, transposed=0, weights=0, biases=0,
            other_constants=0, quantized=1)
    return total + _shared_constants(config)


@functools.lru_cache(maxsize=None)
def _fc1(d: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(hidden width, whether fc1 stays dense)."""
    h = mlp_hidden(d, mlp_ratio)
    return h, keeps_dense(d, h, low_rank(d, h, rank_ratio))


def _shared_constants(config: SubnetConfig) -> GraphCounts:
    """Constants the converter shares: LayerNorm axis and eps, pooling axis, the tokens' shape,
    QuickGELU's 1.702, the qkv permutation; per distinct head count the qkv shape (and, with
    more than one head, the context shape and permutation); per distinct MLP width its shape."""
    heads = set(config.num_heads)
    many = {h for h in heads if h > 1}
    widths = {width for width, dense in (_fc1(config.embed_dim, ratio, config.rank_ratio)
                                         for ratio in set(config.mlp_ratio)) if not dense}
    int32_words = (3 + 1 + 1 + 5 + 5 * len(heads) + 2 * len(many) + 4 * bool(many)
                   + 3 * len(widths))
    count = 6 + len(heads) + len(many) + bool(many) + len(widths)
    return GraphCounts(tensors=count, operators=0, operands=0, channels=0, transposed=0,
                       weights=0, biases=0, other_constants=4 * int32_words + 1, quantized=2)


# Least-squares fits over the counts of 18 exports measured in the tflite-micro wheel (64-bit
# host): 16 digits subnets (6 fresh-weight, 10 trained-form) and 2 deit-tiny-mcu ones.
# Persistent tail per (1, tensor, operator, operand, output channel, transposed byte): the
# per-channel multiplier and shift (8 B a channel) and BATCH_MATMUL's transposed right operand
# (1 B a byte) come out as TFLM allocates them; the rest lumps TfLiteEvalTensors, node
# structures and kernel OpData. Max |error| over the 18: 341 B.
PERSISTENT_FIT = (498.729, 44.933, 196.796, -31.128, 8.057, 0.999)
# Flatbuffer structure beyond the constants and 12 B per quantisation channel (4 B scale, 8 B
# zero point) per (1, tensor, operator, operand): tables, tensor names, alignment. Max |error|
# of the whole file over the 18: 705 B.
STRUCTURE_FIT = (-1346.29, 209.14, -294.807, 81.741)
QUANTIZATION_BYTES = 12


def _persistent(counts: GraphCounts) -> int:
    features = (1, counts.tensors, counts.operators, counts.operands, counts.channels,
                counts.transposed)
    return _align(round(sum(c * f for c, f in zip(PERSISTENT_FIT, features))))


def _flash(counts: GraphCounts) -> int:
    features = (1, counts.tensors, counts.operators, counts.operands)
    structure = round(sum(c * f for c, f in zip(STRUCTURE_FIT, features)))
    return (counts.weights + counts.biases + counts.other_constants
            + QUANTIZATION_BYTES * counts.quantized + structure)


def memory_of(config: SubnetConfig, trained: bool = True) -> MemoryEstimate:
    """Arena and flash of the unfused (exported) and the fused (compiled) model of `config`.

    Exact: both non-persistent arenas (TFLM's head; the compiler's plan). Fitted (see
    PERSISTENT_FIT, STRUCTURE_FIT): the unfused persistent tail and the flash. Not known yet:
    the fused model's persistent tail (the MCUF ops' TFLM glue is not written) and its flash.
    `trained=False` models the fresh-weight export (LayerNorm gamma/beta and FC biases dropped).
    """
    counts = graph_counts(config, trained)
    unfused = Footprint(unfused_non_persistent(config, trained), _persistent(counts),
                        _flash(counts))
    return MemoryEstimate(unfused, Footprint(fused_non_persistent(config, trained), None, None))
