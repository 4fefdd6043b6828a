"""The tensor math of the ViT family, shared by the supernet and extracted subnets.

Both sides call these functions, so a subnet computes what the supernet
computed for it, operation for operation.
"""
import tensorflow as tf

from mcuformer_tf.nas.search_space import HEAD_DIM

LAYER_NORM_EPSILON = 1e-6
QUICK_GELU_ALPHA = 1.702
QUERY_SCALE = HEAD_DIM ** -0.5


def quick_gelu(x):
    """QuickGELU, x * sigmoid(1.702 x): GELU's stand-in made of TFLM builtins (LOGISTIC, MUL)."""
    return x * tf.sigmoid(QUICK_GELU_ALPHA * x)


def split_heads(qkv, num_heads):
    """q, k, v, each [batch, heads, tokens, HEAD_DIM], from a fused qkv tensor.

    qkv: [batch, tokens, 3 * num_heads * HEAD_DIM], laid out (q|k|v, head, dim);
    `num_heads` may be a Python int or a scalar tensor.
    """
    batch, tokens = tf.shape(qkv)[0], tf.shape(qkv)[1]
    qkv = tf.reshape(qkv, [batch, tokens, 3, num_heads, HEAD_DIM])
    return tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), num=3)


def merge_heads(heads):
    """[batch, heads, tokens, HEAD_DIM] -> [batch, tokens, heads * HEAD_DIM], laid out (head, dim)."""
    batch, count, tokens = tf.shape(heads)[0], tf.shape(heads)[1], tf.shape(heads)[2]
    return tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [batch, tokens, count * HEAD_DIM])


def attention_from_qkv(qkv, num_heads):
    """Multi-head self-attention from a fused qkv tensor: [batch, tokens, num_heads * HEAD_DIM].

    Queries are scaled by HEAD_DIM ** -0.5 = 1/8, a power of two, so an
    extracted subnet folds the scale into the query weights exactly.
    The softmax computes in float32 whatever the dtype of qkv (mixed precision).
    """
    q, k, v = split_heads(qkv, num_heads)
    scores = tf.matmul(q * QUERY_SCALE, k, transpose_b=True)
    probabilities = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), v.dtype)
    return merge_heads(tf.matmul(probabilities, v))
