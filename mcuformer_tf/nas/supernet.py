"""The low-rank ViT supernet: every subnet of a `SearchSpace` in one weight-sharing Keras model.

A subnet reaches the graph as a `SubnetEncoding`: a few int32 tensors of fixed
shape (widths per layer, ranks, depth, patch and image size). Call the model
with `config=encoding` to run that subnet, or `set_active(config)` to write the
encoding into non-trainable variables that a plain `model(images)` reads.
Either way a traced `tf.function` sees new *values*, never new shapes or
Python objects, so switching subnets never retraces: one trace serves the
whole space. Depth is elastic through a select: a block the subnet does not
have runs at width 1 (its encoding pads heads, hidden width and ranks with 1s)
and its output is discarded. That costs a few percent of a block, where
`tf.cond` would cost tens of seconds of tracing for its gradient functions.
`drop_path` is the stochastic depth of the last block in training, rising
linearly from 0 at the first (DeiT's rule). Logits are float32 under any
mixed precision policy.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.nas.search_space import HEAD_DIM, SearchSpace, SubnetConfig, low_rank, mlp_hidden
from mcuformer_tf.nas.supernet_layers import (
    ElasticBlock,
    ElasticLayerNorm,
    ElasticPatchEmbedding,
    ElasticPositionEmbedding,
)

LINEAR_NAMES = ("qkv", "proj", "fc1", "fc2")


def max_ranks(space: SearchSpace) -> dict[str, int]:
    """Rank of each linear layer's factors in the largest subnet (the stored extent)."""
    embed, attn = max(space.embed_dim), max(space.num_heads) * HEAD_DIM
    hidden, ratio = mlp_hidden(max(space.embed_dim), max(space.mlp_ratio)), max(space.rank_ratio)
    dims = {"qkv": (embed, 3 * attn), "proj": (attn, embed), "fc1": (embed, hidden),
            "fc2": (hidden, embed)}
    return {name: low_rank(i, o, ratio) for name, (i, o) in dims.items()}


class Supernet(keras.Model):
    """Weight-sharing ViT over a search space; see the module docstring."""

    def __init__(self, space: SearchSpace, channels: int = 3, drop_path: float = 0.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"supernet_{space.name}"), **kwargs)
        self.space = space
        self.max_depth = max(space.depth)
        max_embed = max(space.embed_dim)
        self.patch_embed = ElasticPatchEmbedding(max(space.patch_size), max_embed, channels,
                                                 name="patch_embed")
        self.pos_embed = ElasticPositionEmbedding(space.max_grid, max_embed, name="pos_embed")
        hidden = mlp_hidden(max_embed, max(space.mlp_ratio))
        self.blocks = [
            ElasticBlock(max_embed, max(space.num_heads), hidden, max_ranks(space),
                         drop_path_rate=drop_path * i / max(1, self.max_depth - 1), name=f"block{i}")
            for i in range(self.max_depth)
        ]
        self.norm = ElasticLayerNorm(max_embed, name="norm")
        self.head_kernel = self.add_weight(
            name="head/kernel", shape=(max_embed, space.num_classes),
            initializer="glorot_uniform")
        self.head_bias = self.add_weight(name="head/bias", shape=(space.num_classes,),
                                         initializer="zeros")
        self._active = {
            key: tf.Variable(value, trainable=False, name=f"active_{key}")
            for key, value in self.encode(space.largest()).items()
        }
        self.active_config = space.largest()
        self.built = True

    # -- subnet selection -----------------------------------------------------
    def encode(self, config: SubnetConfig) -> dict[str, np.ndarray]:
        """The fixed-shape int32 encoding of `config` (validated against the space)."""
        self.space.validate(config)
        heads = np.ones(self.max_depth, np.int32)
        hidden = np.ones(self.max_depth, np.int32)
        ranks = np.ones((self.max_depth, len(LINEAR_NAMES)), np.int32)
        for layer in range(config.depth):
            heads[layer] = config.num_heads[layer]
            hidden[layer] = config.hidden_dim(layer)
            shapes = config.linear_shapes(layer)
            ranks[layer] = [shapes[name].rank for name in LINEAR_NAMES]
        scalars = {"image_size": config.image_size, "patch_size": config.patch_size,
                   "embed_dim": config.embed_dim, "depth": config.depth}
        encoding = {key: np.int32(value) for key, value in scalars.items()}
        encoding.update(heads=heads, hidden=hidden, ranks=ranks)
        return encoding

    def set_active(self, config: SubnetConfig) -> None:
        """Make `config` the subnet that `model(images)` computes (no retracing)."""
        for key, value in self.encode(config).items():
            self._active[key].assign(value)
        self.active_config = config

    # -- forward --------------------------------------------------------------
    def call(self, images, training=None, config=None):
        """Logits of the subnet `config` (an encoding from `encode`), else of the active one.

        Images of another size than the subnet's are resized bilinearly first.
        """
        enc = self._active if config is None else config
        size, patch, embed = enc["image_size"], enc["patch_size"], enc["embed_dim"]
        images = tf.cond(
            tf.shape(images)[1] == size,
            lambda: images,
            lambda: tf.cast(tf.image.resize(images, tf.stack([size, size]), method="bilinear"),
                            images.dtype),
        )
        x = self.patch_embed(images, patch, embed)
        x = self.pos_embed(x, size // patch, embed)
        for layer, block in enumerate(self.blocks):
            y = block(x, enc["heads"][layer], enc["hidden"][layer], enc["ranks"][layer],
                      training=training)
            x = tf.where(layer < enc["depth"], y, x)
        pooled = tf.cast(tf.reduce_mean(self.norm(x), axis=1), self.compute_dtype)
        return tf.cast(tf.matmul(pooled, self.head_kernel[:embed]) + self.head_bias, tf.float32)
