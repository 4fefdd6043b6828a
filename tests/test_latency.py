"""The latency model: its trip counts follow the kernels' loops (int8 and INT4 weights), it reads a
.tflite as the config it came from, and (test-all, with TFLM) it is within 5% of whole inferences of
random deit-tiny-mcu first blocks as firmware on the emulated Cortex-M7, with int8 and INT4 weights."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from mcuformer_tf.board import deploy, latency, targets
from mcuformer_tf.board.latency_shape import model_shape
from mcuformer_tf.memory.form import FRESH_FLOAT, QAT
from mcuformer_tf.nas.search_space import SearchSpace

BOUND = 0.05  # the model's stated bound (tools/fit_latency_model.py prints its worst error)


def test_attention_trip_counts_by_hand():
    # 16 tokens of 32 (4 tiles), one head of 64, dense qkv and proj: pass 2 recomputes LayerNorm for
    # all but the last tile, 16 + 12 rows.
    dense = latency.NetShape(32, 8, 32, 10, (latency.BlockShape(1, 64, 0, 0, 0, 0),))
    counts = latency.kernel_features("attention", dense)
    assert counts["ln_rows"] == 28 and counts["ln_elements"] == 28 * 32
    # widened: qkv's input per LayerNorm row, q and probs per row, proj's input per row
    assert counts["widen"] == 28 * 32 + 16 * 64 + 16 * 16 + 16 * 64
    # per tile, outputs x depth: K and V, Q, q·kᵀ, probs·v, proj
    assert counts["dot"] == 4 * (128 * 32 + 64 * 32 + 16 * 64 + 64 * 16 + 32 * 64)
    assert counts["softmax_elements"] == 16 * 16 and counts["calls"] == 2 * 4 + 4 + 4 + 4 + 4
    fc_rank_16 = dataclasses.replace(dense, blocks=(latency.BlockShape(1, 128, 0, 0, 16, 16),))
    low_rank = latency.kernel_features("mlp", fc_rank_16)
    assert low_rank["dot"] == 4 * (16 * 32 + 128 * 16 + 16 * 128 + 32 * 16) and low_rank["gelu"] == 16 * 128


def test_int4_trip_counts_by_hand():
    # the same attention with INT4 weights: its layers with weights take the INT4 loops, q·kᵀ and
    # probs·v (activations) the int8 ones
    int4 = QAT._replace(weight_bits=4)
    dense = latency.NetShape(32, 8, 32, 10, (latency.BlockShape(1, 64, 0, 0, 0, 0),))
    counts = latency.kernel_features("attention", dense, form=int4)
    assert counts["widen4"] == 28 * 32 + 16 * 64 and counts["widen"] == 16 * 64 + 16 * 16
    assert counts["dot4"] == 4 * (128 * 32 + 64 * 32 + 32 * 64) and counts["dot"] == 4 * (16 * 64 + 64 * 16)
    assert counts["channels4"] == 4 * (128 + 64 + 32) and counts["dot4_rest"] == counts["dot4_odd"] == 0
    # rank 15: the factors after it have odd depth, 1 block of 8 and 7 values left; odd channels start
    # mid-byte
    odd = dataclasses.replace(dense, blocks=(latency.BlockShape(1, 128, 0, 0, 15, 15),))
    mlp = latency.kernel_features("mlp", odd, form=int4)
    assert mlp["dot4"] == 4 * 8 * (15 * 4 + 128 + 15 * 16 + 32) and mlp["dot"] == 0
    assert mlp["dot4_rest"] == 4 * 7 * (128 + 32) and mlp["dot4_odd"] == 4 * (64 + 16)
    assert mlp["widen4_rest"] == 2 * 16 * 7
    # patch 4: a patch row of 12 bytes is one block and 4 values left; the head unpacks its filter
    embed = latency.features(latency.NetShape(32, 4, 32, 10, ()), int4)
    assert embed["patch_embed"]["dot4"] == 16 * 32 * 4 * 8 and embed["patch_embed"]["dot4_rest"] == 16 * 32 * 4 * 4
    assert embed["tail"]["unpack_weights"] == 320 and latency.features(dense)["tail"]["unpack_weights"] == 0


def test_the_estimate_follows_the_configs_weight_bits(digits_space):
    config = digits_space.sample(random.Random(4))
    packed = dataclasses.replace(config, weight_bits=4)
    int4 = QAT._replace(weight_bits=4)
    assert latency.instructions(packed) == latency.shape_instructions(latency.net_shape(config), int4)
    assert latency.instructions(packed, QAT) == latency.instructions(packed)  # the config's bits win
    assert 1.0 < latency.instructions(packed) / latency.instructions(config) < 1.2


def test_the_model_reads_a_tflite_as_its_config(fresh_int8_tflite, digits_space):
    from mcuformer_tf.compiler.pipeline import compile_model

    config = digits_space.sample(random.Random(4))  # 2 heads, low-rank
    unfused = fresh_int8_tflite(config).read_bytes()  # the converter's form of fresh weights
    assert model_shape(unfused) == (latency.net_shape(config), FRESH_FLOAT)
    assert model_shape(compile_model(unfused).model_bytes) == (latency.net_shape(config), FRESH_FLOAT)
    assert latency.shape_instructions(*model_shape(unfused)) == latency.instructions(config, FRESH_FLOAT)
    assert model_shape(b"not a model") is None


def test_more_work_takes_more_instructions(digits_space):
    config = digits_space.smallest()
    wider = dataclasses.replace(config, embed_dim=64)
    deeper = dataclasses.replace(config, depth=3, num_heads=(1, 1, 1), mlp_ratio=(2.0, 2.0, 2.0))
    finer = dataclasses.replace(config, patch_size=4)  # 4x the tokens
    base = latency.instructions(config)
    assert base < latency.instructions(wider) and base < latency.instructions(deeper)
    assert latency.instructions(finer) > 3 * base


def _firmware_instructions(model: bytes, folder) -> int:
    """One whole inference of `model`'s fused form as firmware on the emulated Cortex-M7."""
    from mcuformer_tf.compiler.pipeline import compile_model

    path = folder / "fused.tflite"
    path.write_bytes(compile_model(model).model_bytes)
    plan = deploy.plan(path, targets.EMULATOR, 3 << 20)
    deploy.write(plan, path, folder / "firmware", np.zeros(plan.input.shape, np.int8))
    return deploy.build_and_run(folder / "firmware", plan.output.nbytes, 1800).instructions


def _random_first_blocks(space: SearchSpace, count: int, seed: int, weight_bits: int = 8) -> list:
    """tools/fit_latency_model.py's check sets: the first block of `count` random subnets."""
    rng = random.Random(seed)
    return [dataclasses.replace(c, depth=1, num_heads=c.num_heads[:1], mlp_ratio=c.mlp_ratio[:1],
                                weight_bits=weight_bits) for c in (space.sample(rng) for _ in range(count))]


@pytest.mark.slow
@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_within_five_percent_of_random_deit_first_blocks_as_firmware(tmp_path):
    from mcuformer_tf.quantize import first_blocks

    space = SearchSpace.load(first_blocks.SPACE)
    supernet = first_blocks.fresh_supernet(space)
    errors = [latency.instructions(config, FRESH_FLOAT) /
              _firmware_instructions(first_blocks.converted_model(supernet, config), tmp_path) - 1
              for config in _random_first_blocks(space, 10, 202)]
    assert max(map(abs, errors)) <= BOUND, errors


@pytest.mark.slow
@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_within_five_percent_of_random_int4_deit_first_blocks_as_firmware(tmp_path):
    from mcuformer_tf.compiler.int4_weights import pack_int4_model
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize import first_blocks
    from mcuformer_tf.quantize.export import calibrated_int8_tflite

    space = SearchSpace.load(first_blocks.SPACE)
    supernet, data = first_blocks.fresh_supernet(space), load_digits(32)
    errors = []
    for config in _random_first_blocks(space, 4, 707, weight_bits=4):  # export --weight-bits 4's form
        model = pack_int4_model(calibrated_int8_tflite(extract_subnet(supernet, config), data, count=16,
                                                       weight_bits=4))
        errors.append(latency.instructions(config) / _firmware_instructions(model, tmp_path) - 1)
    assert max(map(abs, errors)) <= BOUND, errors
