"""The latency model: instructions of one inference of a subnet's fused model on the Cortex-M7 (DSP
loops), from its shape alone, and milliseconds at a board's clock.

The fused model runs MCUF_PATCH_EMBED, MCUF_ATTENTION and MCUF_MLP per block, then the tail as
TFLM builtins (the final LayerNorm's decomposition, the token MEAN, the head's FULLY_CONNECTED) and
the interpreter's own work (allocation, one Invoke per operator). Each kernel's count is a sum of
its loops' trip counts, read off its C source (tflm_custom_ops/src), times a cost per trip:

- a linear layer runs MCUF_TILE (4) rows at a time: its rows are widened once per tile (`widen`,
  per row element), each output channel takes a dot product over the tile (`dot`, per tile and
  input element; `dot_tail`, the depth's remainder of 4; `channels`, per tile) and one
  requantisation per row (`outputs`); a partial tile takes TFLM's slower requantisation
  (`slow_channels`); every `mcuf_fc_tile` call has a fixed cost (`calls`);
- LayerNorm (`ln_rows`, `ln_elements`), softmax (`softmax_rows`, `softmax_elements`), QuickGELU's
  table look-up (`gelu`), the residual ADD (`residual`) and the tables made once per call (`one`);
- MCUF_ATTENTION recomputes LayerNorm and qkv's first factor for every tile but its last tile in
  pass 2 (pass 1 keeps that tile's Q): 2N - (the last tile's rows) LayerNorm rows;
- MCUF_PATCH_EMBED runs a tile of 4 patches x 32 channels over pieces of 64 bytes of a patch row;
- the export form (memory.form.ExportForm, as for the memory model; default QAT, what `export`
  writes) changes two things: a LayerNorm keeps its gamma and beta (`ln_affine`, per element) where
  the form says so, and per-channel kernels (the converter's form of a float model; the patch
  embedding always) have each channel's multiplier derived in Prepare, in double precision, which the
  Cortex-M7's single-precision FPU leaves to software (`prepare_channels` in the tail), and checked
  per tile for the fast requantisation (`channel_checks`);
- INT4 weights (the form's `weight_bits` 4, from the config's: `export --weight-bits 4`, QAT form)
  change the loops of every layer with weights (not the attention's q·kᵀ and probs·v): the tile is
  widened in groups of 8 values paired for the nibbles (`widen4`, per row element; `widen4_rest`,
  the depth's remainder of 8, in C), the dot product takes a block of 8 packed values per weight word
  (`dot4`, per tile and input value; `dot4_rest`, the remainder of 8, value by value in C), channels
  whose weights start mid-byte (odd depth, odd channel) load and shift one more byte per block
  (`dot4_odd`, per block) and every channel has its own fixed cost (`channels4`); the patch
  embedding's pieces run the same INT4 tile (`piece_channels4` per piece and channel), and the tail's
  FULLY_CONNECTED head (stock TFLM) unpacks its INT4 filter at every Invoke (`unpack_weights`).

The costs per trip (`latency_fit.COEFFICIENTS`, kind -> feature -> instructions) are fitted on
kernel-test counts of real exports, and the tail's on whole inferences as firmware minus their
kernels (tools/fit_latency_model.py refits them in one command and says the model's error).
Every count is arithmetic on a few integers, cached per block shape: tens of thousands of configs a
second.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from mcuformer_tf.board import latency_fit
from mcuformer_tf.memory.form import QAT, ExportForm
from mcuformer_tf.nas.search_space import HEAD_DIM, SubnetConfig

TILE = 4  # MCUF_TILE (mcuf/mcuf.h)
PIECE, BLOCK = 64, 32  # patch_embed.c: bytes of a patch row and channels per conv step
CHANNELS = 3
KINDS = ("patch_embed", "attention", "mlp", "tail")
INT4_WIDEN, INT4_GROUP = ("widen4", "widen4_rest"), 8  # mcuf/dot.h: a block of 8 packed values
INT4_LINEAR = (*INT4_WIDEN, "dot4", "dot4_rest", "dot4_odd", "channels4")
LINEAR = ("widen", "dot", "dot_tail", "channels", "channel_checks", "outputs", "slow_channels", "calls",
          *INT4_LINEAR)
FEATURES = {
    "patch_embed": ("one", "patch_rows", "widen", "dot", "pieces", "piece_channels", "outputs", *INT4_WIDEN,
                    "dot4", "dot4_rest", "piece_channels4"),
    "attention": ("one", "ln_rows", "ln_elements", "ln_affine", *LINEAR, "softmax_rows", "softmax_elements",
                  "residual"),
    "mlp": ("one", "ln_rows", "ln_elements", "ln_affine", *LINEAR, "gelu", "residual"),
    "tail": ("one", "blocks", "tokens_embed", "embed", "embed_classes", "classes", "prepare_channels",
             "affine_tokens_embed", "unpack_weights"),
}


@dataclass(frozen=True)
class BlockShape:
    """One transformer block as its kernels see it: heads, MLP width and the rank of each linear
    layer (0: the layer stays dense)."""

    heads: int
    hidden: int
    qkv_rank: int
    proj_rank: int
    fc1_rank: int
    fc2_rank: int


@dataclass(frozen=True)
class NetShape:
    image: int
    patch: int
    embed: int
    classes: int
    blocks: tuple  # of BlockShape

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2


def net_shape(config: SubnetConfig) -> NetShape:
    """The shape of `config`'s fused model."""
    blocks = []
    for layer in range(config.depth):
        ranks = [0 if s.dense else s.rank for s in config.linear_shapes(layer).values()]
        blocks.append(BlockShape(config.num_heads[layer], config.hidden_dim(layer), *ranks))
    return NetShape(config.image_size, config.patch_size, config.embed_dim, config.num_classes, tuple(blocks))


class _Linear:
    """Trip counts of the linear layers of one kernel call (see the module docstring)."""

    def __init__(self, tokens: int, form: ExportForm):
        self.tokens, self.tiles = tokens, math.ceil(tokens / TILE)
        self.partial = tokens % TILE != 0
        self.per_channel, self.int4 = not form.qat, form.int4
        self.counts = dict.fromkeys(LINEAR, 0)

    def widen(self, rows: int, depth: int, weights: bool = True) -> None:
        """`rows` rows of `depth` widened into the tile of a layer with (INT4 or int8) weights or not."""
        if weights and self.int4:
            self.counts["widen4"] += rows * depth
            self.counts["widen4_rest"] += rows * (depth % INT4_GROUP)
        else:
            self.counts["widen"] += rows * depth

    def layer(self, depth: int, channels: int, rows: int | None = None, tiles: int | None = None,
              calls: int | None = None, weights: bool = True) -> None:
        """A layer of `channels` outputs over `depth` inputs, on `rows` rows in `tiles` tiles (all
        tokens by default), in `calls` calls of mcuf_fc_tile (one per tile by default); `weights`:
        its second operand is the layer's weights (INT4 in an INT4 model), not activations."""
        rows = self.tokens if rows is None else rows
        tiles = self.tiles if tiles is None else tiles
        c = self.counts
        self.widen(rows, depth, weights)
        if weights and self.int4:
            blocks = depth // INT4_GROUP
            c["dot4"] += tiles * channels * blocks * INT4_GROUP
            c["dot4_rest"] += tiles * channels * (depth % INT4_GROUP)
            c["dot4_odd"] += tiles * (channels // 2) * blocks if depth % 2 else 0  # odd channels start mid-byte
            c["channels4"] += tiles * channels
        else:
            c["dot"] += tiles * channels * depth
            c["dot_tail"] += tiles * channels * (depth % 4)
            c["channels"] += tiles * channels
        c["channel_checks"] += tiles * channels if self.per_channel else 0
        c["outputs"] += rows * channels
        c["slow_channels"] += channels * (tiles / self.tiles) if self.partial else 0
        c["calls"] += tiles if calls is None else calls

    def low_rank(self, depth: int, rank: int, channels: int, **trips) -> int:
        """A layer `depth` -> `channels`, through its rank vectors when `rank` (else dense); returns
        the last factor's depth."""
        if rank:
            self.layer(depth, rank, **trips)
            return rank
        return depth


def _attention(n: int, d: int, block: BlockShape, form: ExportForm) -> dict:
    heads, all_heads = block.heads, block.heads * HEAD_DIM
    linear = _Linear(n, form)
    tiles, last = linear.tiles, n - (linear.tiles - 1) * TILE
    ln_rows = 2 * n - last
    depth = linear.low_rank(d, block.qkv_rank, 3 * all_heads, rows=ln_rows, tiles=2 * tiles - 1)
    linear.widen(ln_rows, depth)  # qkv's last factor, widened for each LayerNorm row
    linear.layer(depth, 2 * all_heads, rows=n, calls=2 * heads * tiles)  # K and V, pass 1
    linear.layer(depth, all_heads)  # Q
    linear.widen(-2 * n, depth)  # counted above, once per LayerNorm row
    for _ in range(heads):
        linear.layer(HEAD_DIM, n, weights=False)  # q·kᵀ
        linear.layer(n, HEAD_DIM, weights=False)  # probs·v
    depth = linear.low_rank(all_heads, block.proj_rank, d)
    linear.layer(depth, d)
    affine = ln_rows * d if form.affine(not block.qkv_rank) else 0
    return {"one": 1, "ln_rows": ln_rows, "ln_elements": ln_rows * d, "ln_affine": affine, **linear.counts,
            "softmax_rows": heads * n, "softmax_elements": heads * n * n, "residual": n * d}


def _mlp(n: int, d: int, block: BlockShape, form: ExportForm) -> dict:
    linear = _Linear(n, form)
    linear.layer(linear.low_rank(d, block.fc1_rank, block.hidden), block.hidden)
    linear.layer(linear.low_rank(block.hidden, block.fc2_rank, d), d)
    affine = n * d if form.affine(not block.fc1_rank) else 0
    return {"one": 1, "ln_rows": n, "ln_elements": n * d, "ln_affine": affine, **linear.counts,
            "gelu": n * block.hidden, "residual": n * d}


def _patch_embed(image: int, patch: int, d: int, form: ExportForm = QAT) -> dict:
    grid = image // patch
    tiles = grid * math.ceil(grid / TILE)
    segment = patch * CHANNELS
    steps = tiles * math.ceil(d / BLOCK) * patch
    pieces = math.ceil(segment / PIECE)
    dots = tiles * d * patch  # dot products over a patch row
    counts = dict.fromkeys(FEATURES["patch_embed"], 0)
    counts.update({"one": 1, "patch_rows": grid, "pieces": steps * pieces, "outputs": grid * grid * d})
    if not form.int4:
        return {**counts, "widen": steps * segment, "dot": dots * segment, "piece_channels": dots * pieces}
    rest = sum(min(PIECE, segment - at) % INT4_GROUP for at in range(0, segment, PIECE))  # of a patch row
    return {**counts, "widen4": steps * segment, "widen4_rest": steps * rest, "dot4": dots * (segment - rest),
            "dot4_rest": dots * rest, "piece_channels4": dots * pieces}


def _block_channels(d: int, block: BlockShape) -> int:
    """Output channels of a block's FULLY_CONNECTED layers (rank vectors included)."""
    all_heads = block.heads * HEAD_DIM
    return (block.qkv_rank + 3 * all_heads + block.proj_rank + d + block.fc1_rank + block.hidden +
            block.fc2_rank + d)


def _tail(shape: NetShape, form: ExportForm) -> dict:
    per_channel = shape.embed + (0 if form.qat else sum(_block_channels(shape.embed, b) for b in shape.blocks) +
                                 shape.classes)
    return {"one": 1, "blocks": len(shape.blocks), "tokens_embed": shape.tokens * shape.embed,
            "embed": shape.embed, "embed_classes": shape.embed * shape.classes, "classes": shape.classes,
            "prepare_channels": per_channel, "affine_tokens_embed": shape.tokens * shape.embed if form.trained else 0,
            "unpack_weights": shape.embed * shape.classes if form.int4 else 0}


def features(shape: NetShape, form: ExportForm = QAT) -> dict:
    """kind -> feature -> its trip count, summed over the model's kernels of that kind."""
    n, d = shape.tokens, shape.embed
    summed = {"patch_embed": _patch_embed(shape.image, shape.patch, d, form), "tail": _tail(shape, form)}
    for kind, counter in (("attention", _attention), ("mlp", _mlp)):
        summed[kind] = dict.fromkeys(FEATURES[kind], 0)
        for block in shape.blocks:
            for name, value in counter(n, d, block, form).items():
                summed[kind][name] += value
    return summed


def kernel_features(kind: str, shape: NetShape, block: int = 0, form: ExportForm = QAT) -> dict:
    """The feature counts of one kernel of the model: its patch embedding or block `block`'s half."""
    if kind == "patch_embed":
        return _patch_embed(shape.image, shape.patch, shape.embed, form)
    counter = _attention if kind == "attention" else _mlp
    return counter(shape.tokens, shape.embed, shape.blocks[block], form)


def instructions_of(kind: str, counts: dict, coefficients: dict | None = None) -> float:
    table = (coefficients or latency_fit.COEFFICIENTS)[kind]
    return sum(table[name] * counts[name] for name in FEATURES[kind])


@functools.lru_cache(maxsize=65536)
def _block_instructions(n: int, d: int, block: BlockShape, form: ExportForm) -> float:
    """A block's kernels, and its channels' share of Prepare (the tail's `prepare_channels`)."""
    prepare = 0 if form.qat else _block_channels(d, block) * latency_fit.COEFFICIENTS["tail"]["prepare_channels"]
    return (instructions_of("attention", _attention(n, d, block, form)) +
            instructions_of("mlp", _mlp(n, d, block, form)) + prepare)


@functools.lru_cache(maxsize=4096)
def _ends_instructions(image: int, patch: int, d: int, classes: int, depth: int, form: ExportForm) -> float:
    """The patch embedding and the tail, less the blocks' share of Prepare."""
    ends = NetShape(image, patch, d, classes, ())
    tail = {**_tail(ends, form), "blocks": depth}
    return instructions_of("patch_embed", _patch_embed(image, patch, d, form)) + instructions_of("tail", tail)


def shape_instructions(shape: NetShape, form: ExportForm = QAT) -> int:
    """Instructions of one inference of the fused model of `shape` in export form `form`."""
    n, d = shape.tokens, shape.embed
    total = _ends_instructions(shape.image, shape.patch, d, shape.classes, len(shape.blocks), form)
    return round(total + sum(_block_instructions(n, d, block, form) for block in shape.blocks))


def instructions(config: SubnetConfig, form: ExportForm = QAT) -> int:
    """Instructions of one inference of `config`'s fused model on the Cortex-M7, DSP loops, in export
    form `form` (default: what `export` writes) with the config's weight width."""
    form = form._replace(weight_bits=config.weight_bits)
    total = _ends_instructions(config.image_size, config.patch_size, config.embed_dim, config.num_classes,
                               config.depth, form)
    blocks = zip(config.num_heads, config.mlp_ratio)
    return round(total + sum(_cached_block(config.image_size, config.patch_size, config.rank_ratio,
                                           config.embed_dim, heads, ratio, form) for heads, ratio in blocks))


@functools.lru_cache(maxsize=65536)
def _cached_block(image: int, patch: int, rank_ratio: float, embed: int, heads: int, mlp_ratio: float,
                  form: ExportForm) -> float:
    config = SubnetConfig(image, patch, rank_ratio, embed, 1, (heads,), (mlp_ratio,), 1)
    return _block_instructions(config.num_tokens, embed, net_shape(config).blocks[0], form)


def clear_caches() -> None:
    """Forget cached counts (after the costs change)."""
    for cached in (_block_instructions, _ends_instructions, _cached_block):
        cached.cache_clear()


def describe_error() -> str:
    """The fit's measured error, as the fitting tool printed it."""
    return latency_fit.ERROR
