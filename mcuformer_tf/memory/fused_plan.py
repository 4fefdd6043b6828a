"""The fused model's non-persistent arena, exactly as `compiler.plan` plans it.

The compiled graph (`fused_net`): MCUF_PATCH_EMBED on the image, per block MCUF_ATTENTION and
MCUF_MLP in place on the tokens, each with one scratch buffer of its kernel's
`*_get_buffer_size` (`block_scratch`; with INT4 weights the same: the kernels read them in
place), then the head as exported (`net.head`, whose builtin FULLY_CONNECTED unpacks INT4
weights into scratch). The plan
(`compiler.plan.pack`, TFLM placing the scratch around the offline-planned tensors) equals
`compile_model(...).plan.size` on real exports of both presets (tests).

Speed: the plan is cached per distinct set of block scratch sizes (`fused_non_persistent`).
"""
from __future__ import annotations

import functools
from dataclasses import replace

from mcuformer_tf.memory.form import FLOAT, FRESH_FLOAT, QAT, ExportForm
from mcuformer_tf.memory.net import Net, check_config, head, image_bytes, planned_of
from mcuformer_tf.nas.search_space import HEAD_DIM, SubnetConfig, keeps_dense, low_rank, mlp_hidden
from mcuformer_tf.tflm.arena_plan import greedy_plan

TILE = 4  # MCUF_TILE (mcuf/mcuf.h): tokens the MCUF kernels' inner loops compute together


@functools.lru_cache(maxsize=None)
def block_scratch(n: int, d: int, heads: int, mlp_ratio: float, rank_ratio: float) -> tuple:
    """(MCUF_ATTENTION, MCUF_MLP) scratch bytes of a block: the kernels' get_buffer_size
    (a linear's rank counts 0 where it stays dense; a tile of int16 rows, 2·TILE bytes a value of
    the widest input, and TILE rows of each working buffer)."""
    hd, h = heads * HEAD_DIM, mlp_hidden(d, mlp_ratio)

    def rank(i, o):
        r = low_rank(i, o, rank_ratio)
        return 0 if keeps_dense(i, o, r) else r

    rows = max(d, rank(d, 3 * hd), rank(hd, d))
    attention = 2 * TILE * max(rows, hd, n) + 2 * n * hd + TILE * (rows + hd + n)
    return attention, 3 * TILE * max(h, d, rank(d, h), rank(h, d))


def _body_scratch(config: SubnetConfig) -> list:
    n, d, r = config.num_tokens, config.embed_dim, config.rank_ratio
    return [s for heads, ratio in zip(config.num_heads, config.mlp_ratio)
            for s in block_scratch(n, d, heads, ratio, r)]


def fused_net(config: SubnetConfig, form: ExportForm = QAT, body_scratch=None) -> tuple:
    """The compiled graph's activations and its in-place links (input, output, output offset);
    `body_scratch`: the MCUF_ATTENTION/MCUF_MLP scratch sizes, in order (default: the config's)."""
    n, d = config.num_tokens, config.embed_dim
    image = image_bytes(config)
    net = Net(image)
    x = net.one([0], n * d, [config.grid * d])
    links = [(0, x, min(0, image - n * d))]
    for scratch in _body_scratch(config) if body_scratch is None else body_scratch:
        y = net.one([x], n * d, [scratch])
        links.append((x, y, 0))
        x = y
    head(net, x, config, form)
    return net, links


def _compiler_plan(net: Net, links) -> int:
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


def fused_non_persistent_exact(config: SubnetConfig, form: ExportForm = QAT) -> int:
    """The compiler's non-persistent arena for the fused model, from the whole buffer list."""
    check_config(config)
    return _compiler_plan(*fused_net(config, form))


@functools.lru_cache(maxsize=None)
def _fused_cached(image_size: int, patch_size: int, embed_dim: int, num_classes: int,
                  trained: bool, weight_bits: int, body: tuple) -> int:
    """Cached by `trained` and the weight bits alone: of the form, only they shape the fused graph
    (the head's LayerNorm, its FULLY_CONNECTED's unpacking scratch), so both trained forms share
    an entry."""
    one_block = SubnetConfig(image_size, patch_size, 1.0, embed_dim, 1, (1,), (1.0,), num_classes)
    form = (FLOAT if trained else FRESH_FLOAT)._replace(weight_bits=weight_bits)
    return _compiler_plan(*fused_net(one_block, form, body))


def fused_non_persistent(config: SubnetConfig, form: ExportForm = QAT) -> int:
    """The fused model's non-persistent arena; equals `fused_non_persistent_exact`.

    Each MCUF_ATTENTION/MCUF_MLP scratch is alive alone beside the tokens (one in-place piece,
    at one offset through the body), so two of equal size meet the same obstacles and take the
    same offset: the plan of the distinct sizes, in increasing order, is the plan (cached).
    """
    check_config(config)
    body = tuple(sorted(set(_body_scratch(config))))
    return _fused_cached(config.image_size, config.patch_size, config.embed_dim,
                         config.num_classes, form.trained, form.weight_bits, body)


def fused_planned(config: SubnetConfig, form: ExportForm = QAT) -> tuple:
    """(activations, scratch buffers) TFLM plans for the compiled model: they depend on the
    depth (and the trained form and weight bits of the head) only."""
    return planned_of(("fused", config.depth, form.trained, form.weight_bits),
                      lambda: fused_net(config, form)[0])
