"""The tensor math of the ViT family, shared by the supernet and extracted subnets.

Both sides call these functions, so a subnet computes what the supernet
computed for it, operation for operation.
"""
import tensorflow as tf

from mcuformer_tf.search_space import HEAD_DIM

LAYER_NORM_EPSILON = 1e-6
QUICK_GELU_ALPHA = 1.702


def quick_gelu(x):
    """QuickGELU, x * sigmoid(1.702 x): GELU's stand-in made of TFLM builtins (LOGISTIC, MUL)."""
    return x * tf.sigmoid(QUICK_GELU_ALPHA * x)


def attention_from_qkv(qkv, num_heads):
    """Multi-head self-attention from a fused qkv tensor.

    qkv: [batch, tokens, 3 * num_heads * HEAD_DIM], laid out (q|k|v, head, dim).
    Returns [batch, tokens, num_heads * HEAD_DIM], laid out (head, dim).
    `num_heads` may be a Python int or a scalar tensor.
    """
    batch, tokens = tf.shape(qkv)[0], tf.shape(qkv)[1]
    qkv = tf.reshape(qkv, [batch, tokens, 3, num_heads, HEAD_DIM])
    q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), num=3)  # each [b, h, n, d]
    scores = tf.matmul(q, k, transpose_b=True) * (HEAD_DIM ** -0.5)
    heads = tf.matmul(tf.nn.softmax(scores, axis=-1), v)  # [b, h, n, d]
    return tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [batch, tokens, num_heads * HEAD_DIM])
