"""The unfused model's non-persistent arena: TFLM's greedy plan of the exported graph, exactly.

The unfused model is the graph `convert.to_int8_tflite` writes for an extracted subnet
(DESIGN.md §4), rebuilt here tensor by tensor in the converter's order (`unfused_net`):
CONV_2D, RESHAPE and the position ADD; per block a LayerNorm as builtins (`net.layer_norm`),
the low-rank linears as one FULLY_CONNECTED (dense) or two (factors, the bias on the second),
attention as RESHAPE, TRANSPOSE, UNPACK, BATCH_MATMUL, SOFTMAX, BATCH_MATMUL (+ TRANSPOSE and
RESHAPE with more than one head), QuickGELU as MUL, LOGISTIC, RESHAPE, MUL; the head a
LayerNorm, MEAN over tokens and FULLY_CONNECTED. In every `ExportForm` a dense fc1 keeps
[1, N, H], so QuickGELU needs no RESHAPE. With INT4 weights every FULLY_CONNECTED and the
CONV_2D request a scratch buffer of one byte per weight to unpack their filter into.

Exact (tests: real exports of both presets, TFLM's head in the wheel): the non-persistent
arena, its activations and MEAN's scratch through the planner `memory_report` replays (TFLM's
GreedyMemoryPlanner), and the planned buffers `estimate.Footprint.planning` counts.

Speed: the plan is cached per segment (a block half or the head, with the offset of the
residual tensor it writes); see `unfused_non_persistent`.
"""
from __future__ import annotations

from mcuformer_tf.memory.form import QAT, ExportForm
from mcuformer_tf.memory.net import Net, check_config, head, image_bytes, layer_norm, patch_embedding, planned_of
from mcuformer_tf.nas.search_space import HEAD_DIM, SubnetConfig
from mcuformer_tf.tflm.arena_plan import greedy_plan


def _linear(net: Net, x: int, n: int, shape, form: ExportForm) -> int:
    """One FULLY_CONNECTED, or two (the factors); each unpacks an INT4 filter into scratch."""
    if not shape.dense:
        x = net.one([x], n * shape.rank, form.unpacking(shape.in_dim * shape.rank))
    return net.one([x], n * shape.out_dim, form.unpacking(shape.in_dim * shape.out_dim if shape.dense
                                                           else shape.rank * shape.out_dim))


def _attention(net: Net, x: int, config: SubnetConfig, layer: int, form: ExportForm) -> int:
    n, d, heads = config.num_tokens, config.embed_dim, config.num_heads[layer]
    shapes = config.linear_shapes(layer)
    hd = heads * HEAD_DIM
    normed = layer_norm(net, x, n, d, form.affine(shapes["qkv"].dense))
    qkv = _linear(net, normed, n, shapes["qkv"], form)
    split = net.one([net.one([qkv], 3 * n * hd)], 3 * n * hd)
    q, k, v = net.op([split], [n * hd] * 3)
    scores = net.one([net.one([q, k], heads * n * n)], heads * n * n)
    context = net.one([scores, v], n * hd)
    if heads > 1:
        context = net.one([net.one([context], n * hd)], n * hd)
    return net.one([x, _linear(net, context, n, shapes["proj"], form)], n * d)


def _mlp(net: Net, x: int, config: SubnetConfig, layer: int, form: ExportForm) -> int:
    n, d, h = config.num_tokens, config.embed_dim, config.hidden_dim(layer)
    shapes = config.linear_shapes(layer)
    dense = shapes["fc1"].dense
    hidden = _linear(net, layer_norm(net, x, n, d, form.affine(dense)), n, shapes["fc1"], form)
    gate = net.one([net.one([hidden], n * h)], n * h)
    if not dense:  # a dense FC keeps [1, N, H]; the factors' [N, H] is reshaped back
        gate = net.one([gate], n * h)
    activated = net.one([hidden, gate], n * h)
    return net.one([x, _linear(net, activated, n, shapes["fc2"], form)], n * d)


def unfused_net(config: SubnetConfig, form: ExportForm = QAT) -> Net:
    """The exported int8 graph's activations, in the export form `form`."""
    n, d = config.num_tokens, config.embed_dim
    net = Net(image_bytes(config))
    tokens = net.one([patch_embedding(net, config, form)], n * d)
    x = net.one([tokens], n * d)
    for layer in range(config.depth):
        x = _mlp(net, _attention(net, x, config, layer, form), config, layer, form)
    head(net, x, config, form)
    return net


def unfused_non_persistent_exact(config: SubnetConfig, form: ExportForm = QAT) -> int:
    """TFLM's head for the exported model: the greedy plan of all its activations and scratch."""
    check_config(config)
    return greedy_plan(unfused_net(config, form).buffers())


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


def _segments(config: SubnetConfig, form: ExportForm) -> list:
    """(key, builder) of the unfused graph's segments, last first. A segment's left cut is the
    residual stream tensor it reads (alive throughout it) and its right cut the one it writes."""
    n, d, size = config.num_tokens, config.embed_dim, config.num_tokens * config.embed_dim

    def block(kind, layer):
        def build():
            net = Net(size)
            (_attention if kind == "attention" else _mlp)(net, 0, config, layer, form)
            return net
        return build

    def build_head():
        net = Net(size)
        head(net, 0, config, form)
        return net

    def embed():
        net = Net(image_bytes(config))
        net.one([net.one([patch_embedding(net, config, form)], size)], size)
        return net

    segments = [(("embed", config.image_size, config.patch_size, d, form.weight_bits), embed)]
    for layer in range(config.depth):
        segments.append((("attention", n, d, config.num_heads[layer], config.rank_ratio, form),
                         block("attention", layer)))
        segments.append((("mlp", n, d, config.mlp_ratio[layer], config.rank_ratio, form),
                         block("mlp", layer)))
    segments.append((("head", n, d, config.num_classes, form.trained, form.weight_bits),
                     build_head))  # of the form, the head depends on `trained` and the weight bits
    return segments[::-1]


def unfused_non_persistent(config: SubnetConfig, form: ExportForm = QAT) -> int:
    """TFLM's head for the exported model, segment by segment: `unfused_non_persistent_exact`.

    A buffer's offset depends only on the buffers alive with it that the planner placed
    before it. A segment's buffers live with its own and its two cuts only. A cut meets the
    segment that writes it only at the residual ADD, where the other buffers alive (the previous
    cut and the linear's output) are [N, D] tensors of lower index, which the planner places
    after it. So the offset of a segment's right cut fixes its plan and its left cut's offset:
    the segments are planned from the last, each plan cached by (segment, right offset). The
    tests check the result equals the whole-graph plan on random configs of both presets.
    """
    check_config(config)
    right, top = None, 0
    for key, build in _segments(config, form):
        right, segment_top = _segment_plan(key, build, right)
        top = max(top, segment_top)
    return top


def unfused_planned(config: SubnetConfig, form: ExportForm = QAT) -> tuple:
    """(activations, scratch buffers) TFLM plans for the exported model, from the segments (a
    cut between two segments is one tensor)."""
    segments = _segments(config, form)
    activations, scratch = map(sum, zip(*(planned_of(key, build) for key, build in segments)))
    return activations - (len(segments) - 1), scratch
