"""The few custom tf_keras layers an extracted subnet needs beside standard ones.

Each serialises (registered, `get_config`), so an extracted model survives
`save`/`load_model` unchanged. Everything else in a subnet is a standard
Conv2D, Reshape, Dense, LayerNormalization, Add or GlobalAveragePooling1D.
"""
import tf_keras as keras

from mcuformer_tf import vit_ops


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
class SelfAttention(keras.layers.Layer):
    """Softmax attention of `num_heads` 64-wide heads over a fused qkv tensor (no weights)."""

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def call(self, qkv):
        return vit_ops.attention_from_qkv(qkv, self.num_heads)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (input_shape[-1] // 3,)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.utils.register_keras_serializable(package="mcuformer_tf")
class QuickGELU(keras.layers.Layer):
    """x * sigmoid(1.702 x)."""

    def call(self, x):
        return vit_ops.quick_gelu(x)
