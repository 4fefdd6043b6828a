"""Fresh supernets, and int8 models of their subnets, for tests whose subject is shapes, graphs
and bytes, not accuracy."""
import numpy as np


def perturbed_supernet(space, std: float = 0.05, seed: int = 0):
    """A built supernet of `space`, initialised from `seed`, with every weight moved by normal noise
    of std `std` (0: the fresh initialisation), so the converter keeps the LayerNorm gamma and beta
    and the biases it folds away where they are still exactly 1 and 0."""
    from mcuformer_tf.quantize.first_blocks import fresh_supernet

    supernet = fresh_supernet(space, seed)
    rng = np.random.default_rng(seed)
    for variable in supernet.trainable_weights if std else ():
        variable.assign(variable + rng.normal(0, std, variable.shape).astype(
            variable.dtype.as_numpy_dtype))
    return supernet

def digits_models(space, fresh_int8_tflite, perturbed_int8_tflite, fresh_seeds, perturbed_seeds):
    """[(label, SubnetConfig, .tflite bytes)]: `space.sample(random.Random(seed))` of each seed,
    converted from the fresh and from the perturbed supernet."""
    import random

    cases = []
    for label, make, seeds in (("fresh", fresh_int8_tflite, fresh_seeds),
                               ("perturbed", perturbed_int8_tflite, perturbed_seeds)):
        for seed in seeds:
            config = space.sample(random.Random(seed))
            cases.append((f"{label} {seed}", config, make(config).read_bytes()))
    return cases


def on_int4_grid(model_bytes: bytes) -> bytes:
    """The int8 model with every FULLY_CONNECTED and CONV_2D filter requantised onto a 4-bit grid
    (values in [-7, 7]; linear layers per tensor, as TFLM takes INT4 there, the patch embedding
    per channel) and each bias onto its new input × filter scale; still int8 tensors."""
    from mcuformer_tf.compiler import ir
    from mcuformer_tf.compiler.int4_weights import int4_filters
    from mcuformer_tf.tflm.tflite_graph import Quantization

    model = ir.read(model_bytes)
    for op, weights in int4_filters(model):
        channels = weights.shape[0]
        real = weights.data.reshape(channels, -1) * np.resize(weights.quantization.scale, (channels, 1))
        largest = np.abs(real).max(axis=1, keepdims=True)
        if op.opcode == "FULLY_CONNECTED":
            largest = np.full_like(largest, largest.max())
        scale = np.where(largest > 0, largest / 7, 1.0).astype(np.float32)
        grid = np.clip(np.round(real / scale), -7, 7).astype(np.int8).reshape(weights.shape)
        kept = 1 if op.opcode == "FULLY_CONNECTED" else channels
        weights.quantization = Quantization(scale[:kept, 0], np.zeros(kept, np.int64), 0)
        weights.buffer = ir.Buffer(grid.tobytes())
        bias = op.inputs[2] if len(op.inputs) > 2 else None
        if bias is not None:
            bias_scale = (np.float32(op.inputs[0].quantization.scale[0]) * scale[:kept, 0]).astype(np.float32)
            bias_real = bias.data * np.resize(bias.quantization.scale, channels)
            values = np.round(bias_real / np.resize(bias_scale, channels)).astype(np.int32)
            bias.quantization = Quantization(bias_scale, np.zeros(kept, np.int64), 0)
            bias.buffer = ir.Buffer(values.tobytes())
    return ir.write(model)


def int4_compiled(model_bytes: bytes):
    """The compiled model of an INT4 export as `compile` writes it once the MCUF kernels read packed
    INT4 weights in place (issue 19): the blocks fused, each filter still packed in the operator that
    reads it, then the offline plan. Today's `fuse` keeps blocks with INT4 weights builtin, so the
    match and fuse passes run on the filters unpacked and the same tensors are packed again before
    the plan pass. Returns a `pipeline.Compiled`."""
    from mcuformer_tf.compiler import ir
    from mcuformer_tf.compiler.int4_weights import int4_filters
    from mcuformer_tf.compiler.pipeline import Compilation, Compiled, fuse_pass, match_pass, plan_pass

    model = ir.read(model_bytes)
    filters = [weights for _, weights in int4_filters(model) if weights.int4]
    int8, packed = {}, {}  # a buffer shared by several filters stays shared
    for weights in filters:
        int8.setdefault(weights.buffer, ir.Buffer(weights.data.tobytes()))
        packed.setdefault(int8[weights.buffer], weights.buffer)
        weights.buffer, weights.int4 = int8[weights.buffer], False
    compilation = Compilation(model)
    match_pass(compilation)
    fuse_pass(compilation)
    for weights in filters:
        weights.buffer, weights.int4 = packed[weights.buffer], True
    plan_pass(compilation)
    return Compiled(ir.write(model), compilation.blocks, compilation.fusion, compilation.plan)
