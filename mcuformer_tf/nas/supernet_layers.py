"""Weight-sharing ("elastic") layers of the supernet.

Each layer owns the weights of the largest subnet and computes any smaller one
from their leading slices (AutoFormer's weight entanglement). Every width is
passed at call time as a scalar tensor, so one traced graph serves every
subnet: shapes inside are dynamic, nothing is masked and no FLOP is wasted.
Under a mixed precision policy they compute in its dtype, but for LayerNorm
and the attention softmax, which compute in float32.
"""
import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.nas import vit_ops
from mcuformer_tf.nas.search_space import HEAD_DIM


def _matmul_last(x, w):
    """x [..., in] @ w [in, out] -> [..., out] for any rank of x (as Dense does)."""
    flat = tf.matmul(tf.reshape(x, [-1, tf.shape(w)[0]]), w)
    return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], tf.shape(w)[1:]], axis=0))


class ElasticPatchEmbedding(keras.layers.Layer):
    """Conv with kernel = stride = patch for every patch size of the space.

    The kernel is stored at the largest patch size; a patch of size p uses it
    resized bilinearly to p x p and scaled by (P/p)^2, so a token keeps the
    magnitude of a sum over the whole patch (FlexiViT-style sharing).
    """

    def __init__(self, max_patch, max_embed, channels=3, **kwargs):
        super().__init__(**kwargs)
        self.max_patch, self.channels = max_patch, channels
        self.kernel = self.add_weight(
            name="kernel", shape=(max_patch, max_patch, channels, max_embed),
            initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(max_embed,), initializer="zeros")
        self.built = True

    def kernel_for(self, patch, embed):
        """The [p, p, channels, embed] conv kernel the subnet uses."""
        full = self.kernel[..., :embed]
        flat = tf.reshape(full, [1, self.max_patch, self.max_patch, -1])
        resized = tf.image.resize(flat, tf.stack([patch, patch]), method="bilinear")
        scale = tf.cast(self.max_patch, tf.float32) / tf.cast(patch, tf.float32)
        kernel = tf.reshape(resized, [patch, patch, self.channels, embed]) * scale * scale
        return tf.cast(kernel, full.dtype)

    def call(self, images, patch, embed):
        """images [b, s, s, c] -> tokens [b, (s/p)^2, embed], row-major over patches."""
        batch, size = tf.shape(images)[0], tf.shape(images)[1]
        grid = size // patch
        patches = tf.reshape(images, [batch, grid, patch, grid, patch, self.channels])
        patches = tf.reshape(tf.transpose(patches, [0, 1, 3, 2, 4, 5]),
                             [batch, grid * grid, patch * patch * self.channels])
        kernel = tf.reshape(self.kernel_for(patch, embed), [-1, embed])
        return _matmul_last(patches, kernel) + self.bias[:embed]


class ElasticPositionEmbedding(keras.layers.Layer):
    """A learned position table on the largest grid, resized bilinearly to the active grid."""

    def __init__(self, max_grid, max_embed, **kwargs):
        super().__init__(**kwargs)
        self.max_grid = max_grid
        self.table = self.add_weight(
            name="table", shape=(max_grid, max_grid, max_embed),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.built = True

    def table_for(self, grid, embed):
        """The [grid * grid, embed] table the subnet adds to its tokens."""
        table = self.table[None, :, :, :embed]
        resized = tf.image.resize(table, tf.stack([grid, grid]), method="bilinear")
        return tf.cast(tf.reshape(resized, [grid * grid, embed]), table.dtype)

    def call(self, tokens, grid, embed):
        return tokens + self.table_for(grid, embed)


class ElasticLayerNorm(keras.layers.Layer):
    """LayerNorm over the leading `embed` features, with the sliced gamma and beta; float32 in
    and out under any policy (its float32 dtype makes Keras cast its input)."""

    def __init__(self, max_embed, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.gamma = self.add_weight(name="gamma", shape=(max_embed,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(max_embed,), initializer="zeros")
        self.built = True

    def call(self, x):
        embed = tf.shape(x)[-1]
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return tf.nn.batch_normalization(x, mean, variance, self.beta[:embed], self.gamma[:embed],
                                         vit_ops.LAYER_NORM_EPSILON)


class ElasticLowRankLinear(keras.layers.Layer):
    """y = x A S B + bias with A [in, R], S diag [R], B [R, groups, units], sliced per subnet.

    `groups` keeps the leading-slice rule per group: qkv has groups=3 so that
    fewer heads take the leading heads of each of q, k and v.
    """

    def __init__(self, max_in, max_units, max_rank, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.a = self.add_weight(name="a", shape=(max_in, max_rank), initializer="glorot_uniform")
        self.s = self.add_weight(name="s", shape=(max_rank,), initializer="ones")
        self.b = self.add_weight(name="b", shape=(max_rank, groups, max_units),
                                 initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(groups, max_units), initializer="zeros")
        self.built = True

    def factors(self, in_dim, units, rank):
        """(A S [in, rank], B [rank, groups * units], bias [groups * units]) of the subnet."""
        a = self.a[:in_dim, :rank] * self.s[:rank]
        b = tf.reshape(self.b[:rank, :, :units], [rank, self.groups * units])
        return a, b, tf.reshape(self.bias[:, :units], [-1])

    def call(self, x, units, rank):
        """x [..., in] -> [..., groups * units], multiplied in the order extraction keeps.

        Where the subnet's layer stays dense (rank (in + out) >= in out) the
        folded kernel A S B costs fewer MACs per token than the two factors.
        """
        in_dim = tf.shape(x)[-1]
        a, b, bias = self.factors(in_dim, units, rank)
        out_dim = self.groups * units
        y = tf.cond(rank * (in_dim + out_dim) >= in_dim * out_dim,
                    lambda: _matmul_last(x, tf.matmul(a, b)),
                    lambda: _matmul_last(_matmul_last(x, a), b))
        return y + bias


def drop_path(branch, rate: float):
    """Stochastic depth: each example's residual branch zeroed with probability `rate`, else
    scaled by 1 / (1 - rate), so that its expectation is the branch."""
    keep = 1.0 - rate
    shape = tf.concat([tf.shape(branch)[:1], tf.ones(tf.rank(branch) - 1, tf.int32)], axis=0)
    mask = tf.floor(keep + tf.random.uniform(shape, dtype=tf.float32))
    return branch * tf.cast(mask / keep, branch.dtype)


class ElasticBlock(keras.layers.Layer):
    """Pre-norm transformer block: x + proj(attn(qkv(ln1 x))); x + fc2(gelu(fc1(ln2 x))).

    With `drop_path_rate` > 0 each residual branch passes `drop_path` in training.
    """

    def __init__(self, max_embed, max_heads, max_hidden, max_ranks, drop_path_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.drop_path_rate = drop_path_rate
        max_attn = max_heads * HEAD_DIM
        self.ln1 = ElasticLayerNorm(max_embed, name="ln1")
        self.qkv = ElasticLowRankLinear(max_embed, max_attn, max_ranks["qkv"], groups=3, name="qkv")
        self.proj = ElasticLowRankLinear(max_attn, max_embed, max_ranks["proj"], name="proj")
        self.ln2 = ElasticLayerNorm(max_embed, name="ln2")
        self.fc1 = ElasticLowRankLinear(max_embed, max_hidden, max_ranks["fc1"], name="fc1")
        self.fc2 = ElasticLowRankLinear(max_hidden, max_embed, max_ranks["fc2"], name="fc2")
        self.built = True

    def call(self, x, heads, hidden, ranks, training=None):
        """ranks: int32 [4] for (qkv, proj, fc1, fc2)."""
        def residual(branch):
            return drop_path(branch, self.drop_path_rate) if training and self.drop_path_rate else branch

        embed = tf.shape(x)[-1]
        qkv = self.qkv(self.ln1(x), heads * HEAD_DIM, ranks[0])
        x = x + residual(self.proj(vit_ops.attention_from_qkv(qkv, heads), embed, ranks[1]))
        y = vit_ops.quick_gelu(self.fc1(self.ln2(x), hidden, ranks[2]))
        return x + residual(self.fc2(y, embed, ranks[3]))
