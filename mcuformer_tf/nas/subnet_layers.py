"""The few custom tf_keras layers an extracted subnet needs beside standard ones.

Each serialises (registered, `get_config`), so an extracted model survives
`save`/`load_model` unchanged. Everything else in a subnet is a standard
Conv2D, Reshape, Dense, Softmax, Add or GlobalAveragePooling1D. Attention is four layers (split, scores, softmax,
context) so that quantisation-aware training can quantise each tensor TFLite
will hold in int8.
"""
import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.nas import vit_ops
from mcuformer_tf.nas.search_space import HEAD_DIM


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned absolute position embedding [tokens, dim] to every image's tokens."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding", shape=tuple(input_shape[1:]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, tokens):
        return tokens + self.embedding


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class SplitHeads(keras.layers.Layer):
    """q, k, v, each [batch, heads, tokens, 64], from a fused qkv tensor (no weights)."""

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def call(self, qkv):
        return vit_ops.split_heads(qkv, self.num_heads)

    def compute_output_shape(self, input_shape):
        head = (input_shape[0], self.num_heads, input_shape[1], HEAD_DIM)
        return [head, head, head]

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class AttentionScores(keras.layers.Layer):
    """q kᵀ per head; the 1/8 query scale is already folded into the query weights."""

    def call(self, inputs):
        q, k = inputs
        return tf.matmul(q, k, transpose_b=True)


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class AttentionContext(keras.layers.Layer):
    """Attention probabilities times v, heads merged back: [batch, tokens, heads * 64]."""

    def call(self, inputs):
        probabilities, v = inputs
        return vit_ops.merge_heads(tf.matmul(probabilities, v))


class _HookedLayer(keras.layers.Layer):
    """A layer whose inner tensors pass through identity hooks, one per name in HOOKS.

    In float the hooks do nothing; quantisation-aware training replaces each
    by a fake-quant of that tensor (tfmot's activation mechanism), so QAT sees
    every tensor the int8 graph holds, not only the layer's output.
    """

    HOOKS = ()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for hook in self.HOOKS:
            setattr(self, hook, keras.activations.linear)


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class LayerNorm(_HookedLayer):
    """LayerNorm over the last axis, written as its int8 lowering computes it.

    centred = x - mean(x); y = centred * rsqrt(mean(centred²) + eps) * gamma + beta.
    Centring first keeps the int8 graph clear of the cancellation between
    x·γ/σ and mean·γ/σ that the textbook lowering suffers where |mean| ≫ σ.
    Before quantisation, `qat.widen_layer_norm_epsilon` raises epsilon to a
    few int8 steps of the variance, so that no token's variance + eps lands
    on the grid's zero (rsqrt of zero is infinite).
    """

    HOOKS = ("mean_hook", "centred_hook", "squares_hook", "variance_hook", "shifted_hook",
             "inverse_std_hook", "normalised_hook", "scaled_hook")

    def __init__(self, epsilon=vit_ops.LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=input_shape[-1:], initializer="ones")
        self.beta = self.add_weight(name="beta", shape=input_shape[-1:], initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        centred = self.centred_hook(x - self.mean_hook(tf.reduce_mean(x, -1, keepdims=True)))
        variance = self.variance_hook(tf.reduce_mean(self.squares_hook(centred * centred), -1,
                                                     keepdims=True))
        inverse_std = self.inverse_std_hook(tf.math.rsqrt(self.shifted_hook(variance + self.epsilon)))
        return self.scaled_hook(self.normalised_hook(centred * inverse_std) * self.gamma) + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class QuickGELU(_HookedLayer):
    """x * sigmoid(1.702 x), with hooks on the scaled input and the gate."""

    HOOKS = ("scaled_hook", "gate_hook")

    def call(self, x):
        return x * self.gate_hook(tf.sigmoid(self.scaled_hook(vit_ops.QUICK_GELU_ALPHA * x)))
