"""Quantisation-aware training of an extracted subnet with tensorflow-model-optimization.

Every layer of a subnet gets a QuantizeConfig, so that the fake-quantised
model sees the int8 tensors TFLite will hold:

| layer                          | QuantizeConfig                                         |
|--------------------------------|--------------------------------------------------------|
| Conv2D (patch embedding)       | `KernelQuantizeConfig` (per-channel kernel, output)    |
| Dense (low-rank factors, head) | `KernelQuantizeConfig` (per-tensor kernel, output)     |
| PositionEmbedding              | `PositionEmbeddingQuantizeConfig` (table, output)      |
| LayerNorm, QuickGELU           | `HookedQuantizeConfig` (inner tensors, output)         |
| AttentionScores, AttentionContext (the matmuls), Add, GlobalAveragePooling1D | `OutputQuantizeConfig` |
| Softmax                        | `ProbabilityQuantizeConfig` (TFLite's fixed 1/256, -128) |
| SplitHeads, Reshape            | `MovesBytesQuantizeConfig` (nothing to quantise)       |

The kernel configs follow tfmot's default 8-bit scheme (symmetric,
narrow-range kernels); with `weight_bits=4` the kernels take a 4-bit grid
instead (values in [-7, 7]: Dense per tensor, as TFLM's FULLY_CONNECTED takes
INT4 weights per tensor only; Conv2D per channel), which the converter writes
as INT4 tensors, and activations stay 8-bit. A per-tensor 4-bit grid has 15
levels, and max|w| would spend most of them on a few outlying weights: its range
is the clip of |w| with the least squared quantisation error
(`ClippedKernelQuantizer`), found on every training step as tfmot's
LastValueQuantizer finds max|w|. Activation ranges are tracked with a faster moving
average than tfmot's (decay 0.9, not 0.999), so that a calibration pass and a
fine-tune of a few hundred steps, or none, end with ranges that fit the
tensors (`qat_recipe` runs both).
A layer type missing from this table makes
`quantize_subnet` fail with its name; nothing is silently left float. Any
tensor no fake-quant node covers (none in our subnets; a converter lowering
may add some) is calibrated by the representative images given to the
converter.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.subnet_layers import (
    AttentionContext,
    AttentionScores,
    LayerNorm,
    PositionEmbedding,
    QuickGELU,
    SplitHeads,
)

quantizers = tfmot.quantization.keras.quantizers
QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

RANGE_EMA_DECAY = 0.9
# Each tracked range's decay is a variable of the model ("..._range_decay"): 1 freezes the range.
RANGE_DECAY_SUFFIX = "_range_decay"
# The clips of a per-tensor sub-8-bit kernel grid tried, as fractions of max|w|.
CLIP_FRACTIONS = np.linspace(0.3, 1.0, 36)
# TFLite's int8 SOFTMAX and LOGISTIC outputs are fixed at scale 1/256, zero point -128.
PROBABILITY_MAX = 255 / 256


def _start_range_from(inputs, min_var, max_var) -> None:
    """A range still at its start (0, 0) takes the batch's own range (0 included), so the first
    calibration batch is fake-quantised within its range, not a tenth of it (the average from 0
    would clip every tensor to a tenth, and twelve blocks of that shrink the residual stream to 0)."""
    unset = tf.logical_and(tf.equal(min_var, 0.0), tf.equal(max_var, 0.0))
    min_var.assign(tf.where(unset, tf.minimum(tf.reduce_min(inputs), 0.0), min_var))
    max_var.assign(tf.where(unset, tf.maximum(tf.reduce_max(inputs), 0.0), max_var))


class TensorQuantizer(quantizers.MovingAverageQuantizer):
    """8-bit asymmetric per-tensor fake-quant whose range variables carry the tensor's name.

    A layer with several inner tensors needs one range per tensor; the name
    keeps their variables apart inside one QuantizeWrapper. The moving
    average's decay is a variable too, so a fine-tune can freeze the ranges.
    """

    def __init__(self, tensor="output"):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        self.tensor = tensor

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, f"{self.tensor}_{name}", layer)
        weights["decay"] = layer.add_weight(
            f"{self.tensor}_{name}{RANGE_DECAY_SUFFIX}", initializer=keras.initializers.Constant(RANGE_EMA_DECAY),
            trainable=False)
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        if training:
            _start_range_from(inputs, weights["min_var"], weights["max_var"])
        return quant_ops.MovingAvgQuantize(
            inputs, weights["min_var"], weights["max_var"], ema_decay=weights["decay"],
            is_training=training, num_bits=8, per_channel=False, symmetric=False,
            narrow_range=False)

    def get_config(self):
        return {"tensor": self.tensor}


def _probability_quantizer():
    return quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=PROBABILITY_MAX,
                                     narrow_range=False)


class _NoWeightsQuantizeConfig(QuantizeConfig):
    """Base of the configs below for layers whose weights (if any) stay as they are."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class ClippedKernelQuantizer(quantizers.LastValueQuantizer):
    """A per-tensor symmetric narrow-range kernel grid whose range is the clip of |w|, among
    CLIP_FRACTIONS of max|w|, with the least mean squared quantisation error; set on each training
    step (as LastValueQuantizer sets max|w|), used as stored otherwise."""

    def __init__(self, num_bits):
        super().__init__(num_bits=num_bits, per_axis=False, symmetric=True, narrow_range=True)

    def __call__(self, inputs, training, weights, **kwargs):
        # In tfmot's scope: the .tflite's tensor names, which memory.flash counts, stay tfmot's.
        with tf.name_scope("LastValueQuant"):
            return self._fake_quantize(inputs, training, weights)

    def _fake_quantize(self, inputs, training, weights):
        low, high = weights["min_var"], weights["max_var"]
        if training:
            levels = 2 ** (self.num_bits - 1) - 1
            clips = tf.reduce_max(tf.abs(inputs)) * tf.constant(CLIP_FRACTIONS, inputs.dtype)
            steps = (clips / levels)[:, None]
            flat = tf.reshape(inputs, [1, -1])
            grid = tf.clip_by_value(tf.round(flat / steps), -levels, levels) * steps
            clip = tf.gather(clips, tf.argmin(tf.reduce_mean(tf.square(grid - flat), axis=1)))
            low, high = low.assign(-clip), high.assign(clip)
        return tf.quantization.fake_quant_with_min_max_vars(inputs, low, high, num_bits=self.num_bits,
                                                            narrow_range=True)

    def get_config(self):
        return {"num_bits": self.num_bits}


class KernelQuantizeConfig(QuantizeConfig):
    """Conv2D/Dense: the kernel symmetric narrow-range on a `num_bits` grid (per output channel or
    per tensor) and the (linear) activation's output tracked."""

    def __init__(self, per_axis, num_bits=8):
        self.per_axis = per_axis
        self.num_bits = num_bits

    def get_weights_and_quantizers(self, layer):
        if self.num_bits < 8 and not self.per_axis:
            return [(layer.kernel, ClippedKernelQuantizer(self.num_bits))]
        return [(layer.kernel, quantizers.LastValueQuantizer(
            num_bits=self.num_bits, per_axis=self.per_axis, symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, TensorQuantizer("activation"))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"per_axis": self.per_axis, "num_bits": self.num_bits}


class MovesBytesQuantizeConfig(_NoWeightsQuantizeConfig):
    """Reshape/transpose/unpack: int8 in, the same int8 out, nothing to quantise."""


class OutputQuantizeConfig(_NoWeightsQuantizeConfig):
    """The layer's output fake-quantised per tensor, asymmetric, range tracked by moving average."""

    def get_output_quantizers(self, layer):
        return [TensorQuantizer()]


class HookedQuantizeConfig(OutputQuantizeConfig):
    """Every inner tensor of a `_HookedLayer` (its HOOKS) and its output fake-quantised.

    Hooks named in FIXED_GRID (a sigmoid's output) take TFLite's fixed
    1/256 grid; the others a tracked range.
    """

    FIXED_GRID = ("gate_hook",)

    def get_activations_and_quantizers(self, layer):
        return [(getattr(layer, hook),
                 _probability_quantizer() if hook in self.FIXED_GRID else TensorQuantizer(hook))
                for hook in layer.HOOKS]

    def set_quantize_activations(self, layer, quantize_activations):
        for hook, activation in zip(layer.HOOKS, quantize_activations):
            setattr(layer, hook, activation)


class ProbabilityQuantizeConfig(_NoWeightsQuantizeConfig):
    """Softmax output on TFLite's fixed int8 grid: [0, 255/256] in steps of 1/256."""

    def get_output_quantizers(self, layer):
        return [_probability_quantizer()]


class PositionEmbeddingQuantizeConfig(OutputQuantizeConfig):
    """The position table quantised per tensor (it is an int8 ADD operand), and the output."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.embedding, quantizers.LastValueQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.embedding = quantize_weights[0]


WEIGHT_BITS = (8, 4)
# Kernel layers -> whether their kernel is quantised per output channel.
KERNEL_PER_AXIS = {keras.layers.Conv2D: True, keras.layers.Dense: False}
QUANTIZE_CONFIGS = {
    keras.layers.Reshape: MovesBytesQuantizeConfig,
    keras.layers.Add: OutputQuantizeConfig,
    keras.layers.GlobalAveragePooling1D: OutputQuantizeConfig,
    PositionEmbedding: PositionEmbeddingQuantizeConfig,
    LayerNorm: HookedQuantizeConfig,
    SplitHeads: MovesBytesQuantizeConfig,
    AttentionScores: OutputQuantizeConfig,
    keras.layers.Softmax: ProbabilityQuantizeConfig,
    AttentionContext: OutputQuantizeConfig,
    QuickGELU: HookedQuantizeConfig,
}
CUSTOM_OBJECTS = {cls.__name__: cls for cls in (
    PositionEmbedding, LayerNorm, SplitHeads, AttentionScores, AttentionContext, QuickGELU,
    KernelQuantizeConfig, MovesBytesQuantizeConfig, OutputQuantizeConfig, HookedQuantizeConfig,
    ProbabilityQuantizeConfig, PositionEmbeddingQuantizeConfig, TensorQuantizer, ClippedKernelQuantizer)}


def _annotate(layer, weight_bits: int):
    if type(layer) in KERNEL_PER_AXIS:
        config = KernelQuantizeConfig(KERNEL_PER_AXIS[type(layer)], weight_bits)
    elif type(layer) in QUANTIZE_CONFIGS:
        config = QUANTIZE_CONFIGS[type(layer)]()
    else:
        raise McuformerError(f"layer {layer.name} ({type(layer).__name__}) has no QuantizeConfig; "
                             "it would stay float")
    return tfmot.quantization.keras.quantize_annotate_layer(layer, config)


def widen_layer_norm_epsilon(model: keras.Model, images: np.ndarray, fraction: float) -> dict:
    """Raise each LayerNorm's epsilon to `fraction` of its largest token variance.

    In int8, variance + eps sits on a grid whose step is about max variance / 255;
    with eps of a few steps no token (a blank patch, say) reaches rsqrt(0) in the
    fake-quantised model, whose ranges move while it trains. Tokens whose variance
    is far above eps are unaffected; those near it (in int8 their variance rounds to
    a step or two) are scaled down. Returns {layer name: new epsilon}.
    """
    norms = [layer for layer in model.layers if isinstance(layer, LayerNorm)]
    probe = keras.Model(model.inputs, [norm.input for norm in norms])
    inputs = probe.predict(images, batch_size=64, verbose=0)
    widened = {}
    for norm, x in zip(norms, inputs if len(norms) > 1 else [inputs]):
        largest = float(np.max(np.var(x.astype(np.float64), axis=-1)))
        norm.epsilon = max(norm.epsilon, largest * fraction)
        widened[norm.name] = norm.epsilon
    return widened


def quantize_subnet(model: keras.Model, weight_bits: int = 8) -> keras.Model:
    """The fake-quantised (QAT) twin of an extracted subnet, starting from its weights; kernels on a
    `weight_bits` grid (8 or 4), activations 8-bit."""
    if weight_bits not in WEIGHT_BITS:
        raise McuformerError(f"weight bits must be one of {', '.join(map(str, WEIGHT_BITS))}, not {weight_bits}")
    annotated = keras.models.clone_model(model, clone_function=lambda layer: _annotate(layer, weight_bits))
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS):
        try:
            return tfmot.quantization.keras.quantize_apply(annotated)
        except (RuntimeError, ValueError) as err:
            raise McuformerError(f"quantisation-aware model failed: {str(err).splitlines()[0]}") \
                from None
