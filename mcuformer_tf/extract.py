"""Subnet extraction: a plain tf_keras model with the weights a subnet inherits from the supernet.

The extracted model is made of standard layers (Conv2D patch embedding,
Reshape, Dense, LayerNormalization, Add, GlobalAveragePooling1D) plus the three
small serialisable layers of `subnet_layers`. Each low-rank linear layer
becomes two Dense layers, `<name>_a` (in -> rank, no bias, the diagonal S
folded in) and `<name>_b` (rank -> out), or one dense `<name>` where
rank * (in + out) >= in * out, its kernel the product A S B.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

from mcuformer_tf import vit_ops
from mcuformer_tf.search_space import SubnetConfig
from mcuformer_tf.subnet_layers import PositionEmbedding, QuickGELU, SelfAttention
from mcuformer_tf.supernet import LINEAR_NAMES, Supernet


def _layer_norm(name):
    return keras.layers.LayerNormalization(epsilon=vit_ops.LAYER_NORM_EPSILON, name=name)


def _linear(x, weights, name, shape):
    """Apply one low-rank linear layer as Dense layers; record their weights in `weights`."""
    a, b, bias = weights
    if shape.dense:
        weights_of = {name: [a @ b, bias]}
        x = keras.layers.Dense(shape.out_dim, name=name)(x)
    else:
        weights_of = {f"{name}_a": [a], f"{name}_b": [b, bias]}
        x = keras.layers.Dense(shape.rank, use_bias=False, name=f"{name}_a")(x)
        x = keras.layers.Dense(shape.out_dim, name=f"{name}_b")(x)
    return x, weights_of


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
    return weights, factors


def extract_subnet(supernet: Supernet, config: SubnetConfig) -> keras.Model:
    """A standalone tf_keras model computing subnet `config` with its inherited weights."""
    weights, factors = _subnet_weights(supernet, config)
    images = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = keras.layers.Conv2D(config.embed_dim, config.patch_size, strides=config.patch_size,
                            name="patch_embed")(images)
    x = keras.layers.Reshape((config.num_tokens, config.embed_dim), name="tokens")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for layer in range(config.depth):
        prefix, shapes = f"block{layer}_", config.linear_shapes(layer)

        def linear(y, name):
            y, new = _linear(y, factors[(layer, name)], prefix + name, shapes[name])
            weights.update(new)
            return y

        y = linear(_layer_norm(prefix + "ln1")(x), "qkv")
        y = SelfAttention(config.num_heads[layer], name=prefix + "attn")(y)
        x = keras.layers.Add(name=prefix + "attn_residual")([x, linear(y, "proj")])
        y = QuickGELU(name=prefix + "gelu")(linear(_layer_norm(prefix + "ln2")(x), "fc1"))
        x = keras.layers.Add(name=prefix + "mlp_residual")([x, linear(y, "fc2")])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(_layer_norm("norm")(x))
    logits = keras.layers.Dense(config.num_classes, name="head")(x)
    model = keras.Model(images, logits, name="subnet")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.asarray(w, np.float32) for w in weights[layer.name]])
    return model
