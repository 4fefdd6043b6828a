"""SearchSpace and SubnetConfig: presets, widths, round trips, validation errors, sampling."""
import dataclasses
import json
import random

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import (
    PRESETS,
    SearchSpace,
    SubnetConfig,
    keeps_dense,
    low_rank,
    mlp_hidden,
)

DIGITS_LARGEST = dict(image_size=32, patch_size=4, rank_ratio=1.0, embed_dim=64, depth=4,
                      num_heads=[2] * 4, mlp_ratio=[4.0] * 4, num_classes=10)


def test_digits_extremes():
    space = SearchSpace.load("digits")
    assert space.largest().to_dict() == DIGITS_LARGEST
    assert space.smallest().to_dict() == dict(
        image_size=32, patch_size=8, rank_ratio=0.5, embed_dim=32, depth=2, num_heads=[1, 1],
        mlp_ratio=[2.0, 2.0], num_classes=10)


def test_deit_preset_is_the_mcuformer_supernet_t_space():
    space = SearchSpace.load("deit-tiny-mcu")
    assert space.embed_dim == (168, 192, 216)
    assert space.num_heads == (3, 4) and space.mlp_ratio == (3.5, 4.0)
    assert space.depth == (12, 13, 14) and space.patch_size == (16, 20, 24, 28, 32)
    assert space.rank_ratio == tuple(round(0.4 + 0.05 * i, 2) for i in range(12))
    assert space.largest().num_tokens == 225 and space.smallest().num_tokens == 49
    assert sorted(space.image_patch_pairs()) == [
        (224, 16), (224, 28), (224, 32), (240, 16), (240, 20), (240, 24)]


def test_widths_round_exactly():
    assert low_rank(10, 20, 0.45) == 5  # 4.5 rounds up, with no float error
    assert low_rank(192, 768, 0.4) == 77  # 76.8
    assert low_rank(3, 5, 0.1) == 1  # never 0
    assert mlp_hidden(168, 3.5) == 588
    assert keeps_dense(64, 64, 32) and not keeps_dense(64, 64, 31)


def test_linear_shapes_of_a_block():
    config = SubnetConfig.from_dict({**DIGITS_LARGEST, "rank_ratio": 0.5, "num_heads": 1})
    shapes = config.linear_shapes(0)
    assert {n: (s.in_dim, s.out_dim, s.rank, s.dense) for n, s in shapes.items()} == {
        "qkv": (64, 192, 32, False), "proj": (64, 64, 32, True),
        "fc1": (64, 256, 32, False), "fc2": (256, 64, 32, False)}


@settings(max_examples=50, deadline=None)
@given(preset=st.sampled_from(PRESETS), seed=st.integers(0, 2**32 - 1))
def test_sampled_configs_round_trip_and_lie_in_the_space(preset, seed):
    space = SearchSpace.load(preset)
    config = space.sample(random.Random(seed))
    assert space.contains(config)
    assert config.image_size % config.patch_size == 0
    assert SubnetConfig.from_dict(json.loads(config.to_json())) == config
    assert SubnetConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_config_and_space_files_round_trip(tmp_path, space):
    config = space.sample(random.Random(1))
    config.save(tmp_path / "c.json")
    assert SubnetConfig.load(tmp_path / "c.json") == config
    (tmp_path / "s.yaml").write_text(space.to_yaml())
    assert SearchSpace.load(tmp_path / "s.yaml") == space


def test_sampling_covers_every_choice():
    space = SearchSpace.load("digits")
    configs = space.sample_many(400, seed=3)
    assert {c.patch_size for c in configs} == set(space.patch_size)
    assert {c.depth for c in configs} == set(space.depth)
    assert {r for c in configs for r in c.mlp_ratio} == set(space.mlp_ratio)
    assert space.sample_many(5, seed=3) == configs[:5]


@pytest.mark.parametrize("change, message", [
    ({"patch_size": 5}, "patch_size: image_size 32 is not divisible by patch_size 5"),
    ({"num_heads": [2, 2]}, "num_heads: has 2 entries but depth is 4"),
    ({"rank_ratio": 1.5}, "rank_ratio: must be in (0, 1], got 1.5"),
    ({"embed_dim": "wide"}, "embed_dim: expected an integer, got 'wide'"),
    ({"depth": 0}, "depth: must be at least 1, got 0"),
    ({"colour": 1}, "colour: unknown field"),
])
def test_bad_configs_name_the_field(change, message):
    with pytest.raises(McuformerError) as err:
        SubnetConfig.from_dict({**DIGITS_LARGEST, **change})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_field():
    data = dict(DIGITS_LARGEST)
    del data["depth"]
    with pytest.raises(McuformerError, match="^depth: missing$"):
        SubnetConfig.from_dict(data)


def test_config_outside_the_space_names_the_layer():
    space = SearchSpace.load("digits")
    config = SubnetConfig.from_dict({**DIGITS_LARGEST, "num_heads": [2, 3, 2, 2]})
    with pytest.raises(McuformerError, match=r"^num_heads\[1\]: 3 is not in the space 'digits'"):
        space.validate(config)
    with pytest.raises(McuformerError, match="^num_classes: 1000 but the space"):
        space.validate(SubnetConfig.from_dict({**DIGITS_LARGEST, "num_classes": 1000}))


@pytest.mark.parametrize("change, message", [
    ({"embed_dim": []}, "embed_dim: has no choices"),
    ({"patch_size": [4, 5]}, "patch_size: 5 divides no image_size of the space [32]"),
    ({"depth": [2, 2]}, "depth: lists a choice twice"),
    ({"rank_ratio": [0.5, 1.2]}, "rank_ratio: must be in (0, 1], got 1.2"),
    ({"weight_bits": [8, 2]}, "weight_bits: must be one of 4, 8, got 2"),
])
def test_bad_spaces_name_the_field(change, message):
    data = {**SearchSpace.load("digits").to_dict(), **change}
    with pytest.raises(McuformerError) as err:
        SearchSpace.from_dict(data)
    assert str(err.value).startswith(message)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(McuformerError, match="^unknown search space preset 'cifar'"):
        SearchSpace.load("cifar")
    with pytest.raises(McuformerError, match="^search space file not found"):
        SearchSpace.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.json").write_text("{not: [json")
    with pytest.raises(McuformerError, match="is not valid YAML/JSON"):
        SubnetConfig.load(tmp_path / "bad.json")


def test_weight_bits_are_written_only_where_not_8(tmp_path):
    digits = SearchSpace.load("digits")
    config = digits.largest()
    assert config.weight_bits == 8 and "weight_bits" not in config.to_dict()
    int4 = dataclasses.replace(config, weight_bits=4)
    assert int4.to_dict() == {**DIGITS_LARGEST, "weight_bits": 4}
    assert int4.describe() == config.describe() + " w4"
    int4.save(tmp_path / "c.json")
    assert SubnetConfig.load(tmp_path / "c.json") == int4
    digits.validate(int4)  # any subnet of a supernet exports at either width
    with pytest.raises(McuformerError, match="^weight_bits: must be one of 4, 8, got 3$"):
        SubnetConfig.from_dict({**DIGITS_LARGEST, "weight_bits": 3})
    assert "weight_bits" not in digits.to_dict()
    both = dataclasses.replace(digits, weight_bits=(4, 8))
    (tmp_path / "s.yaml").write_text(both.to_yaml())
    assert SearchSpace.load(tmp_path / "s.yaml") == both and both.to_dict()["weight_bits"] == [4, 8]
    assert both.smallest().weight_bits == 4 and both.largest().weight_bits == 8
    assert SearchSpace.load("deit-tiny-mcu-int4").smallest().weight_bits == 4
