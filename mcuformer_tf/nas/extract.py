"""Subnet extraction: a plain tf_keras model with the weights a subnet inherits from the supernet.

The extracted model is made of standard layers (Conv2D patch embedding,
Reshape, Dense, Softmax, Add, GlobalAveragePooling1D) plus the small
serialisable layers of `subnet_layers`. Each low-rank linear layer
becomes two Dense layers, `<name>_a` (in -> rank, no bias, the diagonal S
folded in) and `<name>_b` (rank -> out), or one dense `<name>` where
rank * (in + out) >= in * out, its kernel the product A S B. The attention's
query scale (1/8) is folded into the query columns of qkv, exactly, since it is
a power of two.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

from mcuformer_tf.nas import vit_ops
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.nas.subnet_layers import (
    AttentionContext,
    AttentionScores,
    LayerNorm,
    PositionEmbedding,
    QuickGELU,
    SplitHeads,
)
from mcuformer_tf.nas.supernet import LINEAR_NAMES, Supernet


def _linear(x, name, shape):
    """One low-rank linear layer as Dense layers: `name`, or `name`_a then `name`_b."""
    if shape.dense:
        return keras.layers.Dense(shape.out_dim, name=name)(x)
    x = keras.layers.Dense(shape.rank, use_bias=False, name=f"{name}_a")(x)
    return keras.layers.Dense(shape.out_dim, name=f"{name}_b")(x)


def _linear_weights(factors, name, shape) -> dict:
    """The weights of `_linear`'s layers from the factors (A S, B, bias), keyed by layer name."""
    a, b, bias = factors
    if shape.dense:
        return {name: [a @ b, bias]}
    return {f"{name}_a": [a], f"{name}_b": [b, bias]}


def _subnet_weights(supernet: Supernet, config: SubnetConfig):
    """Every weight of the subnet as numpy, keyed like the layers of the extracted model."""
    e, p = config.embed_dim, config.patch_size
    weights = {
        "patch_embed": [supernet.patch_embed.kernel_for(p, e).numpy(),
                        supernet.patch_embed.bias[:e].numpy()],
        "pos_embed": [supernet.pos_embed.table_for(config.grid, e).numpy()],
        "norm": [supernet.norm.gamma[:e].numpy(), supernet.norm.beta[:e].numpy()],
        "head": [supernet.head_kernel[:e].numpy(), supernet.head_bias.numpy()],
    }
    factors = {}
    for layer in range(config.depth):
        block, shapes = supernet.blocks[layer], config.linear_shapes(layer)
        for ln in ("ln1", "ln2"):
            norm = getattr(block, ln)
            weights[f"block{layer}_{ln}"] = [norm.gamma[:e].numpy(), norm.beta[:e].numpy()]
        for name in LINEAR_NAMES:
            shape = shapes[name]
            units = shape.out_dim // getattr(block, name).groups
            factors[(layer, name)] = tuple(
                t.numpy() for t in getattr(block, name).factors(shape.in_dim, units, shape.rank))
        factors[(layer, "qkv")] = _scale_queries(*factors[(layer, "qkv")], shapes["qkv"].out_dim // 3)
    return weights, factors


def _scale_queries(a, b, bias, width):
    """qkv factors with the attention's query scale (1/8, exact) folded into the query outputs."""
    scale = np.ones(b.shape[1], np.float32)
    scale[:width] = vit_ops.QUERY_SCALE
    return a, b * scale, bias * scale


def transformer_block(x, config: SubnetConfig, layer: int, linear):
    """Block `layer` of `config` on tokens x as tf_keras layers named `block<layer>_*`.

    `linear(y, name)` applies the block's linear layer `name` (qkv, proj, fc1, fc2).
    """
    prefix = f"block{layer}_"
    q, k, v = SplitHeads(config.num_heads[layer], name=prefix + "heads")(
        linear(LayerNorm(name=prefix + "ln1")(x), "qkv"))
    scores = AttentionScores(name=prefix + "scores")([q, k])
    probabilities = keras.layers.Softmax(name=prefix + "softmax")(scores)
    y = AttentionContext(name=prefix + "context")([probabilities, v])
    x = keras.layers.Add(name=prefix + "attn_residual")([x, linear(y, "proj")])
    y = QuickGELU(name=prefix + "gelu")(linear(LayerNorm(name=prefix + "ln2")(x), "fc1"))
    return keras.layers.Add(name=prefix + "mlp_residual")([x, linear(y, "fc2")])


def block_model(config: SubnetConfig, layer: int = 0) -> keras.Model:
    """Block `layer` of `config` alone, tokens in and out, with fresh weights (for memory studies)."""
    tokens = keras.Input((config.num_tokens, config.embed_dim), name="tokens")

    def linear(y, name):
        return _linear(y, f"block{layer}_{name}", config.linear_shapes(layer)[name])

    return keras.Model(tokens, transformer_block(tokens, config, layer, linear), name="block")


def extract_subnet(supernet: Supernet, config: SubnetConfig) -> keras.Model:
    """A standalone tf_keras model computing subnet `config` with its inherited weights."""
    weights, factors = _subnet_weights(supernet, config)
    images = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = keras.layers.Conv2D(config.embed_dim, config.patch_size, strides=config.patch_size,
                            name="patch_embed")(images)
    x = keras.layers.Reshape((config.num_tokens, config.embed_dim), name="tokens")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for layer in range(config.depth):
        def linear(y, name, layer=layer):
            shape, full_name = config.linear_shapes(layer)[name], f"block{layer}_{name}"
            weights.update(_linear_weights(factors[(layer, name)], full_name, shape))
            return _linear(y, full_name, shape)

        x = transformer_block(x, config, layer, linear)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(LayerNorm(name="norm")(x))
    logits = keras.layers.Dense(config.num_classes, name="head")(x)
    model = keras.Model(images, logits, name="subnet")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.asarray(w, np.float32) for w in weights[layer.name]])
    return model
