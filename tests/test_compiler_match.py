"""`match` places every operator of an exported model in a proven block, and refuses the rest."""
import random

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.match import TENSOR_ROLES, match
from mcuformer_tf.errors import McuformerError

# patch 8 low-rank 2 heads; patch 4 low-rank 1-2 heads; patch 4 dense+low-rank 1-2 heads;
# patch 8 dense attention with 1 head and low-rank MLP
SEEDS = (0, 1, 3, 7)
QAT_SEED = 0


@pytest.fixture(scope="module")
def fresh(digits_space, fresh_int8_tflite):
    """seed -> (config, .tflite bytes) from a fresh supernet (the converter folds LayerNorm
    gamma = 1, beta = 0 and the zero biases away)."""
    configs = {seed: digits_space.sample(random.Random(seed)) for seed in SEEDS}
    return {seed: (config, fresh_int8_tflite(config).read_bytes())
            for seed, config in configs.items()}


@pytest.fixture(scope="module")
def exported(digits_space):
    """(config, bytes) exported as `export` does (QAT model, calibrated, converted) from a
    supernet whose weights are all perturbed, so every LayerNorm and bias constant is kept."""
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.supernet import Supernet
    from mcuformer_tf.quantize.export import calibrated_int8_tflite

    supernet = Supernet(digits_space)
    supernet(np.zeros((1, 32, 32, 3), np.float32))
    rng = np.random.default_rng(0)
    for variable in supernet.trainable_weights:
        variable.assign(variable + rng.normal(0, 0.05, variable.shape).astype(
            variable.dtype.as_numpy_dtype))
    config = digits_space.sample(random.Random(QAT_SEED))
    data = load_digits(config.image_size)
    return config, calibrated_int8_tflite(extract_subnet(supernet, config), data, count=32)


def _check_blocks_follow_config(model, config):
    blocks = match(model)
    assert [b.kind for b in blocks] == ["patch_embed"] + ["attention", "mlp"] * config.depth + [
        "head"]
    assert [op for b in blocks for op in b.ops] == model.operators
    tokens, dim = config.num_tokens, config.embed_dim
    assert blocks[0].dims == dict(image_height=config.image_size, image_width=config.image_size,
                                  channels=3, patch=config.patch_size, tokens=tokens, dim=dim)
    assert blocks[0].input is model.inputs[0] and blocks[-1].output is model.outputs[0]
    for layer in range(config.depth):
        shapes = config.linear_shapes(layer)
        rank = {name: None if s.dense else s.rank for name, s in shapes.items()}
        attention, mlp = blocks[1 + 2 * layer], blocks[2 + 2 * layer]
        assert attention.dims == dict(tokens=tokens, dim=dim, heads=config.num_heads[layer],
                                      head_dim=64, qkv_rank=rank["qkv"], proj_rank=rank["proj"])
        assert mlp.dims == dict(tokens=tokens, dim=dim, hidden=config.hidden_dim(layer),
                                fc1_rank=rank["fc1"], fc2_rank=rank["fc2"])
        assert attention.input is blocks[2 * layer].output and mlp.input is attention.output
    assert blocks[-1].dims == dict(tokens=tokens, dim=dim, classes=config.num_classes,
                                   fc_rank=None)
    for block in blocks:
        assert tuple(block.tensors) == TENSOR_ROLES[block.kind]
        assert set(block.op_roles.values()) == set(block.ops)
        for role, op in block.op_roles.items():
            written = op.outputs if role == "qkv_split" else [block.tensors[role]]
            assert list(op.outputs) == written, (block.kind, role)
    return blocks


@pytest.mark.parametrize("seed", SEEDS)
def test_fresh_models_are_blocks_shaped_as_their_config(fresh, seed):
    config, raw = fresh[seed]
    blocks = _check_blocks_follow_config(ir.read(raw), config)
    attention = blocks[1]
    assert attention.tensors["ln_gamma"] is None and attention.tensors["qkv_bias"] is None
    assert attention.tensors["ln_out"] is attention.tensors["ln_normalized"]


def test_exported_model_keeps_every_constant_role(exported):
    config, raw = exported
    blocks = _check_blocks_follow_config(ir.read(raw), config)
    for block in blocks[1:]:
        for role in ("ln_gamma", "ln_beta", "ln_scaled"):
            assert block.tensors[role] is not None, (block.kind, role)
        assert block.tensors["ln_out"] is block.op_roles["ln_out"].outputs[0]
    attention, mlp = blocks[1], blocks[2]
    assert attention.tensors["qkv_down_weight"].shape == (24, 48)  # rank 0.5 * 48
    assert attention.tensors["qkv_bias"].dtype == np.int32
    assert attention.tensors["q"].shape == (1, 2, 16, 64)
    scale = mlp.tensors["gelu_scale"].quantization
    real = float(scale.scale[0]) * (int(mlp.tensors["gelu_scale"].data.reshape(-1)[0])
                                    - int(scale.zero_point[0]))
    assert abs(real - 1.702) < 0.01


def _block_tensors(model):
    return match(model)[1].tensors


def _refused(model, *fragments):
    with pytest.raises(McuformerError) as info:
        match(model)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_refuses_a_graph_with_an_operator_removed(fresh):
    model = ir.read(fresh[0][1])
    roles = _block_tensors(model)
    rsqrt = next(op for op in model.operators if roles["ln_rstd"] in op.outputs)
    reader = next(op for op in model.operators if roles["ln_rstd"] in op.inputs)
    reader.inputs[reader.inputs.index(roles["ln_rstd"])] = rsqrt.inputs[0]
    model.replace_ops([rsqrt], [])
    _refused(model, "operator 3 (MEAN)", "as attention")


def test_refuses_an_intermediate_read_outside_its_block(exported):
    model = ir.read(exported[1])
    probs = _block_tensors(model)["probs"]
    extra = ir.Tensor("extra", probs.shape, probs.dtype, probs.quantization)
    model.operators.append(ir.Op("ABS", [probs], [extra]))
    _refused(model, "operator 3 (MEAN)", f"'{probs.name}' is read outside the block "
             f"(operator {len(model.operators) - 1})")


def test_refuses_an_activation_where_a_constant_must_be(exported):
    model = ir.read(exported[1])
    roles = _block_tensors(model)
    fc = next(op for op in model.operators if roles["qkv_weight"] in op.inputs)
    fc.inputs[1] = roles["ln_centered"]
    _refused(model, "operator 3 (MEAN)", "qkv_weight: expected a constant")


def test_refuses_a_reshape_quantised_unlike_its_input(exported):
    model = ir.read(exported[1])
    heads = _block_tensors(model)["qkv_heads"]
    q = heads.quantization
    heads.quantization = type(q)(q.scale, q.zero_point + 1, q.axis)
    _refused(model, "operator 3 (MEAN)", "quantised unlike its input")


def test_refuses_a_fused_activation_and_a_graph_without_head(fresh):
    model = ir.read(fresh[3][1])
    residual = match(model)[2].op_roles["output"]
    residual.options.fusedActivationFunction = schema.ActivationFunctionType.RELU
    _refused(model, "as mlp", "fused activation")
    model = ir.read(fresh[3][1])
    head = match(model)[-1]
    model.replace_ops(head.ops, [])
    model.outputs = [head.input]
    _refused(model, "does not end in a classifier head")
