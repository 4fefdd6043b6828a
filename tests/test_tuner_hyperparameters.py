"""A search space as KerasTuner HyperParameters, and back."""
import dataclasses
import random

import pytest

from mcuformer_tf.errors import McuformerError
from tuner.hyperparameters import config_from_values, hyperparameters_of, values_of_config


def test_every_config_round_trips_through_hyperparameter_values(space):
    for config in space.sample_many(50, seed=2) + [space.largest(), space.smallest()]:
        assert config_from_values(space, values_of_config(config)) == config


def test_defaults_are_the_smallest_subnet(space):
    assert config_from_values(space, hyperparameters_of(space)) == space.smallest()


def test_per_layer_choices_are_conditional_on_depth(space):
    hp = hyperparameters_of(space)
    shallow, deep = min(space.depth), max(space.depth)
    hp.values["depth"] = shallow
    assert hp.is_active(f"num_heads_{shallow - 1}")
    assert not hp.is_active(f"num_heads_{shallow}")
    hp.values["depth"] = deep
    assert hp.is_active(f"mlp_ratio_{deep - 1}")


def test_resolution_offers_only_divisible_pairs():
    from mcuformer_tf.nas.search_space import SearchSpace

    space = SearchSpace.load("deit-tiny-mcu")
    hp = hyperparameters_of(space)
    assert set(hp.space[0].values) == {"224/16", "224/28", "224/32", "240/16", "240/20", "240/24"}


def test_bad_values_give_one_line_errors(digits_space):
    values = values_of_config(digits_space.sample(random.Random(0)))
    del values["depth"]
    with pytest.raises(McuformerError, match="^hyperparameter depth missing"):
        config_from_values(digits_space, values)
    values = values_of_config(digits_space.largest())
    values["embed_dim"] = 40
    with pytest.raises(McuformerError, match="^embed_dim: 40 is not in the space"):
        config_from_values(digits_space, values)


@pytest.mark.parametrize("bits", [(8,), (4,), (4, 8)])
def test_weight_bits_are_a_hyperparameter_where_the_space_has_more_than_8(digits_space, bits):
    from tuner.evolution import crossover, mutate

    space = dataclasses.replace(digits_space, weight_bits=bits)
    hp = hyperparameters_of(space)
    assert ("weight_bits" in hp.values) == (bits != (8,))
    configs = space.sample_many(40, seed=2)
    assert {c.weight_bits for c in configs} == set(bits)
    for config in configs:
        assert config_from_values(space, values_of_config(config)) == config
    rng = random.Random(0)
    children = [mutate(space, configs[k], rng, 1.0) for k in range(20)] + [
        crossover(space, configs[k], configs[k + 1], rng) for k in range(20)]
    assert {c.weight_bits for c in children} == set(bits)
    if bits == (4,):  # one width: the same draws as the 8-bit space, at 4 bits
        assert configs == [dataclasses.replace(c, weight_bits=4) for c in digits_space.sample_many(40, seed=2)]
