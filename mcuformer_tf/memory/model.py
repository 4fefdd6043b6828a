"""Arena and flash of a ViT from its `SubnetConfig` alone: no conversion, no TFLM, no TensorFlow.

The unfused model is the graph `convert.to_int8_tflite` writes for an extracted
subnet (DESIGN.md §4), rebuilt here tensor by tensor in the converter's order:
CONV_2D, RESHAPE and the position ADD; per block a LayerNorm as builtins
(MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, then gamma MUL and beta ADD), the
low-rank linears as one FULLY_CONNECTED (dense) or two (factors, the bias on
the second), attention as RESHAPE, TRANSPOSE, UNPACK, BATCH_MATMUL, SOFTMAX,
BATCH_MATMUL (+ TRANSPOSE and RESHAPE with more than one head), QuickGELU as
MUL, LOGISTIC, RESHAPE, MUL; the head a LayerNorm, MEAN over tokens and
FULLY_CONNECTED. Two forms (`qat`): the QAT export (`mcuformer-tf export`:
FULLY_CONNECTED kernels per tensor, every LayerNorm's gamma and beta kept) and
the converter's form of a float model (kernels per channel; where the linear
after a LayerNorm, qkv or fc1, stays dense the converter folds gamma and beta
into it). In both a dense fc1 keeps [1, N, H], so QuickGELU needs no RESHAPE. `trained=False` gives the fresh-weight form: the
converter drops gamma/beta and FC biases that are exactly 1 and 0 (two [N, D]
activations fewer per LayerNorm; the CONV_2D bias stays).

Exact (tests: real exports of both presets, TFLM's head in the wheel, the
compiler's plan): the unfused non-persistent arena (its activations and
MEAN's scratch through the planner `memory_report` replays, TFLM's
GreedyMemoryPlanner), the fused one (as `compiler.plan` plans it: MCUF ops in
place, the kernels' `*_get_buffer_size` as scratch), `graph_counts` (tensors,
operators, weight/bias/constant bytes, quantisation channels) and
`fused_graph_counts` (the same for the compiled model, and the exact length of
the MCUF ops' flexbuffer options, rebuilt in the compiler's order).

Planning bytes (`Footprint.planning`; on the exports measured the working arena
is exact for unfused models and 8 bytes over for fused ones, tests:
test_arena_search): while TFLM plans it takes from the free arena the scratch
requests' head, one AllocationInfo per tensor and scratch buffer and the
greedy planner's 40 bytes per planned buffer; for small graphs of many
tensors that is more than the plan it makes, so a model runs only with
`Footprint.working_arena`, which the tuner budgets.

Fused persistent tail, exact for the host runner (TFLM tree 90b983c2 on 64-bit
x86, our glue; tests with TFLM_ROOT: arena_used_bytes = plan + tail, to the
byte): TFLM allocates from a 16-byte boundary one TfLiteEvalTensor (24 B) per
tensor and one NodeAndRegistration (64 B) per operator in two 8-aligned
arrays, then the head builtins' parsed options, each at its own alignment (the
MCUF ops have none), then 16-aligned kernel buffers: each op's OpData
(sizeof of the glue's structs: MCUF_ATTENTION 752, MCUF_MLP 768; TFLM's for
the head's MEAN, SUB, MUL, ADD, RSQRT, FULLY_CONNECTED) and, per
FULLY_CONNECTED layer inside an MCUF op, the patch embedding and the head, a
multiplier and a shift per output channel; one ScratchBufferHandle (8 B) per
scratch request. `fused_persistent` adds those up from the counts (the
alignment simulated); what does not depend on the config (the allocator and
planner objects, the interpreter's input/output TfLiteTensors, the patch
embedding's OpData and its and the MEANs' scratch handles) is the one measured
constant FUSED_PERSISTENT_FIXED, which `tools/fit_fused_memory.py` prints
(a single value over every measured model). Per-channel kernels are taken to
have scales that differ (the converter's; the glue keeps one multiplier for a
uniform tensor); per-tensor kernels, which `mcuformer-tf export` writes (QAT
quantises FULLY_CONNECTED kernels per tensor, as tfmot does), need no channel
arrays at all. On a 32-bit target the sizeofs differ: the firmware's own
arena search is the deployed figure.

Fitted on those counts: the unfused persistent tail (the wheel's TFLM, 64-bit
host: a newer TFLM than any source tree here, whose sizeofs and allocation
order cannot be read off as above; PERSISTENT_FIT states its error) and the
flash of both models. The compiled file holds its constants,
quantisation parameters, MCUF options and offline plan exactly as counted;
FUSED_STRUCTURE_FIT covers the rest (flatbuffer tables, alignment, and the
tensor names the converter chose, which depend on each layer's form), per
block part, within 118 B of every compiled export it was fitted on.

Speed: the plans are cached per segment (a block half or the head, with the
offset of the residual tensor it writes) and per distinct fused scratch set;
the fused counts per block, the MCUF options' lengths per block form and
number widths. The per-config work is a few dictionary look-ups per block. The
caches grow with the distinct blocks of a search space (thousands of entries
at most).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import HEAD_DIM, LinearShape, SubnetConfig, keeps_dense, mlp_hidden
from mcuformer_tf.nas.search_space import low_rank as _exact_low_rank
from mcuformer_tf.tflm.arena_plan import (
    ALIGNMENT,
    PERSISTENT_AFTER_PLANNING,
    PlannedBuffer,
    greedy_plan,
    planning_bytes,
)

_low_rank = functools.lru_cache(maxsize=None)(_exact_low_rank)  # exact decimals are slow


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model in TFLM: arena = persistent + non_persistent (what TFLM reports using);
    flash = the .tflite. `planning`: the free arena TFLM's allocator needs beside the persistent
    tail while it plans (see `planning_bytes`), so the arena a model runs with is
    `working_arena`: above `arena` where planning needs more than the plan it makes."""

    non_persistent: int
    persistent: int | None
    flash: int | None
    planning: int = 0

    @property
    def arena(self) -> int | None:
        return None if self.persistent is None else self.persistent + self.non_persistent

    @property
    def working_arena(self) -> int | None:
        if self.persistent is None:
            return None
        return max(self.arena, self.persistent - PERSISTENT_AFTER_PLANNING + self.planning)


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
        """As `arena_plan.planned_buffers`: tensors in index order, then scratch in op order."""
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


def _planned_counts(buffers) -> tuple:
    """(activations, scratch buffers) among planned buffers."""
    activations = sum(1 for b in buffers if b.tensor is not None)
    return activations, len(buffers) - activations


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


def _affine(trained: bool, qat: bool, dense: bool) -> bool:
    """Whether a LayerNorm keeps its gamma MUL and beta ADD: trained weights, and either a QAT
    export (the fake quantisation between them stops the converter folding them) or a
    low-rank linear after it (a dense FULLY_CONNECTED takes them in)."""
    return trained and (qat or not dense)


def _attention(net: _Net, x: int, config: SubnetConfig, layer: int, trained: bool,
               qat: bool) -> int:
    n, d, heads = config.num_tokens, config.embed_dim, config.num_heads[layer]
    shapes = config.linear_shapes(layer)
    hd = heads * HEAD_DIM
    normed = _layer_norm(net, x, n, d, _affine(trained, qat, shapes["qkv"].dense))
    qkv = _linear(net, normed, n, shapes["qkv"])
    split = net.one([net.one([qkv], 3 * n * hd)], 3 * n * hd)
    q, k, v = net.op([split], [n * hd] * 3)
    scores = net.one([net.one([q, k], heads * n * n)], heads * n * n)
    context = net.one([scores, v], n * hd)
    if heads > 1:
        context = net.one([net.one([context], n * hd)], n * hd)
    return net.one([x, _linear(net, context, n, shapes["proj"])], n * d)


def _mlp(net: _Net, x: int, config: SubnetConfig, layer: int, trained: bool, qat: bool) -> int:
    n, d, h = config.num_tokens, config.embed_dim, config.hidden_dim(layer)
    shapes = config.linear_shapes(layer)
    dense = shapes["fc1"].dense
    hidden = _linear(net, _layer_norm(net, x, n, d, _affine(trained, qat, dense)), n,
                     shapes["fc1"])
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


def unfused_net(config: SubnetConfig, trained: bool = True, qat: bool = True) -> _Net:
    """The exported int8 graph's activations (`trained=False`: fresh weights; `qat=False`: the
    converter's form of a float model)."""
    n, d = config.num_tokens, config.embed_dim
    net = _Net(_image_bytes(config))
    tokens = net.one([net.one([0], n * d)], n * d)
    x = net.one([tokens], n * d)
    for layer in range(config.depth):
        x = _mlp(net, _attention(net, x, config, layer, trained, qat), config, layer, trained,
                 qat)
    _head(net, x, config, trained)
    return net


@functools.lru_cache(maxsize=None)
def block_scratch(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(MCUF_ATTENTION, MCUF_MLP) scratch bytes of a block: the kernels' get_buffer_size
    (a linear's rank counts 0 where it stays dense)."""
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def rank(i, o):
        r = _low_rank(i, o, rank_ratio)
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


def unfused_non_persistent_exact(config: SubnetConfig, trained: bool = True,
                                 qat: bool = True) -> int:
    """TFLM's head for the exported model: the greedy plan of all its activations and scratch."""
    _check(config)
    return greedy_plan(unfused_net(config, trained, qat).buffers())


def _simulate(buffers, forced: dict) -> tuple:
    """GreedyMemoryPlanner's placement (as `arena_plan.greedy_plan`) where the buffers at the
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


def _segments(config: SubnetConfig, trained: bool, qat: bool) -> list:
    """(key, builder) of the unfused graph's segments, last first. A segment's left cut is the
    residual stream tensor it reads (alive throughout it) and its right cut the one it writes."""
    n, d, size = config.num_tokens, config.embed_dim, config.num_tokens * config.embed_dim

    def block(kind, layer):
        def build():
            net = _Net(size)
            (_attention if kind == "attention" else _mlp)(net, 0, config, layer, trained, qat)
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
        segments.append((("attention", n, d, config.num_heads[layer], config.rank_ratio, trained,
                          qat), block("attention", layer)))
        segments.append((("mlp", n, d, config.mlp_ratio[layer], config.rank_ratio, trained, qat),
                         block("mlp", layer)))
    segments.append((("head", n, d, config.num_classes, trained), head))
    return segments[::-1]


def unfused_non_persistent(config: SubnetConfig, trained: bool = True, qat: bool = True) -> int:
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
    for key, build in _segments(config, trained, qat):
        right, segment_top = _segment_plan(key, build, right)
        top = max(top, segment_top)
    return top


_PLANNED: dict = {}  # segment key, or ("fused", depth, trained) -> (activations, scratch)


def _planned_of(key, build) -> tuple:
    if key not in _PLANNED:
        _PLANNED[key] = _planned_counts(build().buffers())
    return _PLANNED[key]


def unfused_planned(config: SubnetConfig, trained: bool = True, qat: bool = True) -> tuple:
    """(activations, scratch buffers) TFLM plans for the exported model, from the segments (a
    cut between two segments is one tensor)."""
    segments = _segments(config, trained, qat)
    activations, scratch = map(sum, zip(*(_planned_of(key, build) for key, build in segments)))
    return activations - (len(segments) - 1), scratch


def fused_planned(config: SubnetConfig, trained: bool = True) -> tuple:
    """(activations, scratch buffers) TFLM plans for the compiled model: they depend on the
    depth (and the trained form of the head) only."""
    return _planned_of(("fused", config.depth, trained), lambda: fused_net(config, trained)[0])


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
    channels: int  # output channels of CONV_2D and per-channel FULLY_CONNECTED kernels
    transposed: int  # bytes of BATCH_MATMUL right operands TFLM transposes (adj_y false)
    weights: int  # int8 kernels of CONV_2D and FULLY_CONNECTED
    biases: int  # int32
    other_constants: int  # position table, LayerNorm and QuickGELU constants, shapes, axes
    quantized: int  # quantisation channels: one per int8 tensor, one per weight/bias channel

    def __add__(self, other):
        return GraphCounts(*map(int.__add__, self.__dict__.values(), other.__dict__.values()))


def _linear_counts(shape, trained: bool, per_channel: bool) -> GraphCounts:
    """One linear: FC (x, kernel[, bias]) → y, or two with the bias on the second; its kernels
    and bias quantised per output channel or (`per_channel=False`) per tensor."""
    kernels = [(shape.in_dim, shape.out_dim)] if shape.dense else [
        (shape.in_dim, shape.rank), (shape.rank, shape.out_dim)]
    bias = trained
    weights = sum(i * o for i, o in kernels)
    channels = sum(o for _, o in kernels) if per_channel else 0
    scales = channels if per_channel else len(kernels)
    return GraphCounts(
        tensors=2 * len(kernels) + bias, operators=len(kernels),
        operands=3 * len(kernels) + bias, channels=channels, transposed=0, weights=weights,
        biases=4 * shape.out_dim * bias, other_constants=0,
        quantized=len(kernels) + scales + (shape.out_dim if per_channel else 1) * bias)


def _layer_norm_counts(n: int, d: int, affine: bool) -> GraphCounts:
    """MEAN SUB MUL MEAN ADD RSQRT MUL (+ gamma MUL, beta ADD); the axis and eps are shared."""
    ops = 7 + 2 * affine
    return GraphCounts(tensors=ops + 2 * affine, operators=ops, operands=20 + 6 * affine,
                       channels=0, transposed=0, weights=0, biases=0,
                       other_constants=2 * d * affine, quantized=ops + 2 * affine)


@functools.lru_cache(maxsize=None)
def _block_counts(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float,
                  trained: bool, qat: bool) -> GraphCounts:
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def shape(i, o):
        return LinearShape(i, o, _low_rank(i, o, rank_ratio))

    def linear(i, o):
        return _linear_counts(shape(i, o), trained, not qat)

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
    return (_layer_norm_counts(n, d, _affine(trained, qat, shape(d, 3 * hd).dense))
            + linear(d, 3 * hd) + attention + linear(hd, d)
            + _layer_norm_counts(n, d, _affine(trained, qat, not reshape))
            + linear(d, h) + linear(h, d) + mlp)


def graph_counts(config: SubnetConfig, trained: bool = True, qat: bool = True) -> GraphCounts:
    """Tensors, operators and constant bytes of the exported model (`trained=False`: fresh;
    `qat=False`: the converter's form of a float model, see `memory_of`)."""
    _check(config)
    n, d, p = config.num_tokens, config.embed_dim, config.patch_size
    total = GraphCounts(  # image, CONV_2D (+ kernel, bias), RESHAPE, position ADD (+ table)
        tensors=7, operators=3, operands=4 + 3 + 3, channels=d, transposed=0,
        weights=p * p * 3 * d, biases=4 * d, other_constants=n * d, quantized=5 + 2 * d)
    blocks = [vars(_block_counts(n, d, heads, ratio, config.rank_ratio, trained,
                                 qat)).values()
              for heads, ratio in zip(config.num_heads, config.mlp_ratio)]
    total = GraphCounts(*map(sum, zip(vars(total).values(), *blocks)))  # one sum per field
    total += _layer_norm_counts(n, d, trained) + _linear_counts(
        LinearShape(d, config.num_classes, d), trained, not qat) + GraphCounts(  # MEAN
            tensors=1, operators=1, operands=3, channels=0, transposed=0, weights=0, biases=0,
            other_constants=0, quantized=1)
    return total + _shared_constants(config, qat)


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


def _padding(*lengths) -> int:
    """Bytes that pad buffers of these lengths to the writer's 16-byte alignment."""
    return sum(-length % ALIGNMENT for length in lengths)


def _fused_linear(shape, trained: bool, per_channel: bool) -> tuple:
    """(constant tensors, constant bytes, their padding, quantisation channels, channel-array
    bytes) of one linear inside an MCUF op: its kernel(s) and, in the trained form, its bias
    (a per-tensor kernel needs no channel arrays: the glue keeps one multiplier)."""
    kernels = [(shape.in_dim, shape.out_dim)] if shape.dense else [
        (shape.in_dim, shape.rank), (shape.rank, shape.out_dim)]
    channels = [o for _, o in kernels] if per_channel else []
    lengths = [i * o for i, o in kernels] + [4 * shape.out_dim] * trained
    scales = sum(channels) + (shape.out_dim * trained if per_channel else len(kernels) + trained)
    return (len(kernels) + trained, sum(lengths), _padding(*lengths), scales,
            sum(_align(8 * c) for c in channels))


@functools.lru_cache(maxsize=None)
def _fused_block_counts(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float,
                        trained: bool, qat: bool) -> tuple:
    """One MCUF_ATTENTION and one MCUF_MLP, their own constants and their two outputs: tensors,
    data, padding, quantized, channel_arrays, options, low_rank_qkv/proj/mlp, multi_head."""
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)
    shapes = [LinearShape(i, o, _low_rank(i, o, rank_ratio))
              for i, o in ((d, 3 * hd), (hd, d), (d, h), (h, d))]
    linears = [_fused_linear(shape, trained, not qat) for shape in shapes]
    affine = _affine(trained, qat, shapes[0].dense) + _affine(trained, qat, shapes[2].dense)
    return (sum(x[0] for x in linears) + 2 * affine + 2,
            sum(x[1] for x in linears) + 2 * d * affine,
            sum(x[2] for x in linears) + 2 * affine * _padding(d),
            sum(x[3] for x in linears) + 2 * affine + 2,
            sum(x[4] for x in linears),
            _attention_options(n, d, heads, *shapes[:2], trained, qat)
            + _mlp_options(n, d, h, *shapes[2:], trained, qat),
            int(not shapes[0].dense), int(not shapes[1].dense), int(not shapes[2].dense),
            int(heads > 1))


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


def _linear_options(name: str, shape, trained: bool, n: int, shapes: dict, inputs: set) -> int:
    """Adds a linear's down-projection tensor and optional inputs; returns its rank (0: dense).
    A dense FULLY_CONNECTED on [1, N, in] keeps [1, N, out]; a factor pair writes [N, ·]."""
    if not shape.dense:
        shapes[f"{name}_down_out"] = [n, shape.rank]
        inputs.add(f"{name}_down_weight")
    if trained:
        inputs.add(f"{name}_bias")
    return 0 if shape.dense else shape.rank


def _attention_options(n: int, d: int, heads: int, qkv, proj, trained: bool, qat: bool) -> int:
    hd = heads * HEAD_DIM
    affine = _affine(trained, qat, qkv.dense)
    shapes, inputs = _ln_shapes(n, d, affine), {"ln_gamma", "ln_beta"} if affine else set()
    qkv_rank = _linear_options("qkv", qkv, trained, n, shapes, inputs)
    shapes["qkv_out"] = [1, n, 3 * hd] if qkv.dense else [n, 3 * hd]
    per_head = [1, heads, n, HEAD_DIM]
    shapes.update(qkv_heads=[1, n, 3, heads, HEAD_DIM], qkv_transposed=[3, 1, heads, n, HEAD_DIM],
                  q=per_head, k=per_head, v=per_head, scores=[1, heads, n, n],
                  probs=[1, heads, n, n], context=per_head)
    if heads > 1:
        shapes.update(context_tokens=[1, n, heads, HEAD_DIM], context_flat=[n, hd])
    proj_rank = _linear_options("proj", proj, trained, n, shapes, inputs)
    shapes["proj_out"] = [n, d]
    dims = {"tokens": n, "dim": d, "heads": heads, "head_dim": HEAD_DIM, "qkv_rank": qkv_rank,
            "proj_rank": proj_rank}
    return _options_bytes("attention", dims, shapes, inputs)


def _mlp_options(n: int, d: int, h: int, fc1, fc2, trained: bool, qat: bool) -> int:
    affine = _affine(trained, qat, fc1.dense)
    shapes, inputs = _ln_shapes(n, d, affine), {"ln_gamma", "ln_beta"} if affine else set()
    fc1_rank = _linear_options("fc1", fc1, trained, n, shapes, inputs)
    reads = ()
    if fc1.dense:
        shapes.update(fc1_out=[1, n, h], gelu_scaled=[1, n, h], gelu_sigmoid=[1, n, h])
    elif qat:  # QAT: RESHAPE right after the factors; the gate's MUL reads their [N, H]
        shapes.update(fc1_out=[n, h], fc1_tokens=[1, n, h], gelu_scaled=[1, n, h],
                      gelu_sigmoid=[1, n, h])
        reads = (("gelu_out", ("fc1_out", "gelu_sigmoid")),)
    else:  # the float form reshapes the sigmoid
        shapes.update(fc1_out=[n, h], gelu_scaled=[n, h], gelu_sigmoid=[n, h],
                      gelu_sigmoid_tokens=[1, n, h])
    shapes["gelu_out"] = [1, n, h]
    fc2_rank = _linear_options("fc2", fc2, trained, n, shapes, inputs)
    shapes["fc2_out"] = [1, n, d] if fc2.dense else [n, d]
    dims = {"tokens": n, "dim": d, "hidden": h, "fc1_rank": fc1_rank, "fc2_rank": fc2_rank}
    return _options_bytes("mlp", dims, shapes, inputs, reads)


@functools.lru_cache(maxsize=None)
def _patch_embed_options(image_size: int, patch_size: int, d: int) -> int:
    grid = image_size // patch_size
    dims = {"image_height": image_size, "image_width": image_size, "channels": 3,
            "patch": patch_size, "tokens": grid * grid, "dim": d}
    shapes = {"conv_out": [1, grid, grid, d], "tokens": [1, grid * grid, d]}
    return _options_bytes("patch_embed", dims, shapes, {"conv_bias"})


def fused_graph_counts(config: SubnetConfig, trained: bool = True,
                       qat: bool = True) -> FusedCounts:
    """Tensors, operators, constant bytes and TFLM per-channel arrays of the compiled model.

    The compiled graph: MCUF_PATCH_EMBED (image, conv kernel and bias, position table), per
    block MCUF_ATTENTION and MCUF_MLP (their kernels, biases and LayerNorm gamma/beta, one
    LayerNorm epsilon and one QuickGELU factor shared by all, in one buffer: both quantise to
    127), then the head as exported (LayerNorm builtins, MEAN over tokens, FULLY_CONNECTED).
    `trained=False`: the fresh-weight form; `qat=False`: the converter's form of a float model
    (see `memory_of`).
    """
    _check(config)
    n, d, p, classes = config.num_tokens, config.embed_dim, config.patch_size, config.num_classes
    trained, head_scales = bool(trained), 1 if qat else classes
    # image, conv kernel and bias, position, tokens; epsilon, QuickGELU factor; LN axis, pool
    # axis, FC kernel (+ bias, gamma, beta); LN's 7 activations (+ 2), pooled, logits; QAT:
    # more tensors on that one byte's buffer (see _qat_constants)
    eps_tensors = _qat_constants(config.depth, qat)
    tensors = 5 + 2 + (3 + 3 * trained) + (9 + 2 * trained) + eps_tensors
    data = (p * p * 3 * d + 4 * d + n * d  # patch embedding
            + 1  # epsilon and QuickGELU factor: one shared byte
            + 4 + 4 + d * classes + (4 * classes + 2 * d) * trained)  # head
    quantized = (1 + d + d + 1 + 1) + 2 + (head_scales + (head_scales + 2) * trained) + (
        9 + 2 * trained) + eps_tensors
    padding = _padding(p * p * 3 * d, 4 * d, n * d, 1, 4, 4, d * classes,
                       *[4 * classes, d, d] * trained)
    outside_blocks = (tensors, data, padding, quantized, _align(8 * d),
             _patch_embed_options(config.image_size, p, d), 0, 0, 0, 0)
    blocks = [_fused_block_counts(n, d, heads, ratio, config.rank_ratio, trained, qat)
              for heads, ratio in zip(config.num_heads, config.mlp_ratio)]
    (tensors, data, padding, quantized, arrays, options, qkv, proj, mlp,
     multi) = map(sum, zip(outside_blocks, *blocks))
    return FusedCounts(tensors=tensors, operators=1 + 2 * config.depth + 9 + 2 * trained,
                       blocks=config.depth, channel_arrays=arrays,
                       classes=0 if qat else classes, data=data,
                       padding=padding + _padding(4 * (3 + tensors)), quantized=quantized,
                       options=options, low_rank_qkv=qkv, low_rank_proj=proj, low_rank_mlp=mlp,
                       multi_head=multi, trained=trained)


@functools.lru_cache(maxsize=None)
def _fc1(d: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(hidden width, whether fc1 stays dense)."""
    h = mlp_hidden(d, mlp_ratio)
    return h, keeps_dense(d, h, _low_rank(d, h, rank_ratio))


def _qat_constants(depth: int, qat: bool) -> int:
    """Tensors a QAT export adds on the buffer of the byte 127 that the float form's LayerNorm
    epsilon and QuickGELU factor share: each LayerNorm's epsilon is quantised apart (2 * depth
    + 1 in all) and the factor is held twice (seen in every QAT export measured)."""
    return 2 * depth + 1 if qat else 0


def _shared_constants(config: SubnetConfig, qat: bool) -> GraphCounts:
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
    eps_tensors = _qat_constants(config.depth, qat)
    count = 6 + len(heads) + len(many) + bool(many) + len(widths) + eps_tensors
    return GraphCounts(tensors=count, operators=0, operands=0, channels=0, transposed=0,
                       weights=0, biases=0, other_constants=4 * int32_words + 1,
                       quantized=2 + eps_tensors)


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


# The fused model's persistent tail in the host runner: TFLM tree 90b983c2 built for 64-bit x86
# (TFLM_ROOT), our glue compiled with it. Each entry is a sizeof there (bytes).
TFLM_HOST_SIZES = {
    "eval_tensor": 24,  # TfLiteEvalTensor, one per tensor, one array (8-byte aligned)
    "node": 64,  # NodeAndRegistration, one per operator, one array (8-byte aligned)
    "scratch_handle": 8,  # ScratchBufferHandle, one per scratch request, one array
    "MCUF_ATTENTION": 752,  # the glue's OpData: mcuf_attention_params and three ints
    "MCUF_MLP": 768,  # mcuf_mlp_params and three ints
}
# Per builtin of the head: (OpData bytes, parsed builtin options (bytes, alignment)).
TFLM_HOST_BUILTINS = {
    "MEAN": (44, (1, 1)), "SUB": (52, (8, 4)), "MUL": (36, (4, 4)), "ADD": (60, (8, 4)),
    "RSQRT": (28, None), "FULLY_CONNECTED": (64, (16, 4)),
}
_HEAD_OPS = ("MEAN", "SUB", "MUL", "MEAN", "ADD", "RSQRT", "MUL")
_AFFINE_OPS = ("MUL", "ADD")
# What does not depend on the config: TFLM's allocator, planner and builtin-data allocator, the
# interpreter's input and output TfLiteTensors, MCUF_PATCH_EMBED's OpData, the scratch handles
# of the patch embedding and the head's MEANs (measured: `python tools/fit_fused_memory.py`).
FUSED_PERSISTENT_FIXED = 704


def _tail_bytes(allocations) -> int:
    """Bytes TFLM's persistent tail grows by for (size, alignment) allocations made in order
    from a 16-byte boundary, up to the next 16-byte boundary (the next kernel buffer)."""
    tail = 0
    for size, alignment in allocations:
        tail = (tail - size) // alignment * alignment
    return -(tail // ALIGNMENT * ALIGNMENT)


@functools.lru_cache(maxsize=None)
def _head_tail(arrays: int, trained: bool) -> int:
    """The tail's first allocations: `arrays` bytes of TfLiteEvalTensors and nodes, then the
    head builtins' parsed options, then their OpData (the MCUF ops have neither options nor
    builtin data). Cached by `arrays` modulo 16, what the alignment depends on."""
    head = _HEAD_OPS + _AFFINE_OPS * trained + ("MEAN", "FULLY_CONNECTED")
    parsed = [TFLM_HOST_BUILTINS[op][1] for op in head if TFLM_HOST_BUILTINS[op][1]]
    return (_tail_bytes([(arrays, 8), *parsed]) - arrays
            + sum(_align(TFLM_HOST_BUILTINS[op][0]) for op in head))


def fused_persistent(counts: FusedCounts, fixed: int = FUSED_PERSISTENT_FIXED) -> int:
    """TFLM's persistent tail for the compiled model in the host runner (module docstring)."""
    sizes = TFLM_HOST_SIZES
    arrays = sizes["eval_tensor"] * counts.tensors + sizes["node"] * counts.operators
    blocks = counts.blocks * (2 * sizes["scratch_handle"] + _align(sizes["MCUF_ATTENTION"])
                              + _align(sizes["MCUF_MLP"]))
    head_channels = 2 * _align(4 * counts.classes)  # FULLY_CONNECTED's multipliers and shifts
    return (fixed + arrays + _head_tail(arrays % ALIGNMENT, counts.trained) + blocks
            + counts.channel_arrays + head_channels)


def fused_counted_bytes(counts: FusedCounts) -> int:
    """The compiled file's bytes the counts give exactly: constants, 12 B per quantisation
    channel, the MCUF ops' options, the offline plan (three int32 then one per tensor), the
    padding of those buffers."""
    return (counts.data + counts.padding + QUANTIZATION_BYTES * counts.quantized
            + counts.options + 4 * (3 + counts.tensors))


def fused_flash_features(counts: FusedCounts) -> tuple:
    """What the structure fit multiplies: per block part, its count (the trained form apart,
    whose biases and folded LayerNorms bring tensors with long converter names), and the
    blocks past the tenth (two-digit indices in their tensors' names)."""
    parts = (1, counts.blocks, counts.low_rank_qkv, counts.low_rank_proj, counts.low_rank_mlp)
    return (*parts, counts.multi_head, *(counts.trained * part for part in parts),
            max(0, counts.blocks - 10))


# Least-squares fit of the rest of the compiled file (tables, tensor names, alignment) on
# `fused_flash_features`, over 108 compiled exports: 50 digits configs in the fresh-weight form,
# 50 in the trained form, 8 deit-tiny-mcu ones (`python tools/fit_fused_memory.py`). Max |error|
# of the whole file over them: 118 B.
FUSED_STRUCTURE_FIT = (3323.308, 918.634, 132.134, 126.729, 291.16, 3.986, 720.672, 772.642,
                       225.968, 18.043, 380.125, 9.023)


def fused_flash(counts: FusedCounts) -> int:
    """The compiled .tflite's size: the counted bytes and the structure fit, rounded to the 16
    bytes the writer pads the file to (its constants are 16-byte aligned)."""
    structure = sum(c * f for c, f in zip(FUSED_STRUCTURE_FIT, fused_flash_features(counts)))
    return ALIGNMENT * round((fused_counted_bytes(counts) + structure) / ALIGNMENT)


# The QAT export's tensor names (subnet/quant_block<i>_<layer>/...) are longer than the float
# form's the structure fits were made on: the flash of each model gains a + b per block + c per
# low-rank linear (least squares over 8 QAT exports of the demo supernet, max |error| 366 B
# unfused and 207 B fused; tests/test_memory_model.py checks 10 others).
QAT_NAMES_FIT = {"unfused": (986.0, 142.1, 131.2), "fused": (464.0, 1010.1, -62.8)}


def _qat_names(model: str, fused: FusedCounts) -> int:
    low_rank = fused.low_rank_qkv + fused.low_rank_proj + fused.low_rank_mlp
    a, b, c = QAT_NAMES_FIT[model]
    return round(a + b * fused.blocks + c * low_rank)


def memory_of(config: SubnetConfig, trained: bool = True, qat: bool = True) -> MemoryEstimate:
    """Arena and flash of the unfused (exported) and the fused (compiled) model of `config`.

    Exact: both non-persistent arenas (TFLM's head; the compiler's plan) and the fused model's
    persistent tail in the host runner (64-bit TFLM 90b983c2 with our glue). Fitted (see
    PERSISTENT_FIT, STRUCTURE_FIT, FUSED_STRUCTURE_FIT): the unfused persistent tail (the
    wheel's) and both flash sizes. `trained=False` models the fresh-weight export (LayerNorm
    gamma/beta and FC biases dropped). `qat=True` (the default) is what `mcuformer-tf export`
    writes: FULLY_CONNECTED kernels per tensor (tfmot's scheme; the patch embedding per
    channel) and every LayerNorm's gamma MUL and beta ADD kept; `qat=False` the converter's
    form of a float model: every kernel per output channel, gamma and beta folded into a dense
    FULLY_CONNECTED after the LayerNorm. The fits were made on the latter and hold for both
    through the counts (tests: QAT exports).
    """
    counts = graph_counts(config, trained, qat)
    fused = fused_graph_counts(config, trained, qat)
    names = {model: _qat_names(model, fused) if qat else 0 for model in QAT_NAMES_FIT}
    unfused = Footprint(unfused_non_persistent(config, trained, qat), _persistent(counts),
                        _flash(counts) + names["unfused"],
                        planning_bytes(counts.tensors, *unfused_planned(config, trained, qat)))
    return MemoryEstimate(unfused, Footprint(
        fused_non_persistent(config, trained), fused_persistent(fused),
        fused_flash(fused) + names["fused"],
        planning_bytes(fused.tensors, *fused_planned(config, trained))))
