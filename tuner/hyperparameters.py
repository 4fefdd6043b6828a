"""A `SearchSpace` as KerasTuner `HyperParameters`, and a trial's values back as a `SubnetConfig`.

HyperParameters are the only currency between a KerasTuner oracle and a tuner,
so every dimension of the space becomes one:
- `resolution`: the (image, patch) pair as "image/patch", over divisible pairs only;
- `embed_dim`, `depth`, `rank_ratio`: ordered choices;
- `num_heads_<i>`, `mlp_ratio_<i>` per layer, conditional on `depth > i`, so an
  oracle never varies a layer the subnet does not have;
- `weight_bits` (8 or 4: int8 or packed INT4 weights), a choice where the space
  has both, fixed where it has 4 alone, and absent (8) where it has 8 alone, as
  in a space file without it: searches made before it existed resume as they were.
"""
from __future__ import annotations

from typing import Mapping

import keras_tuner as kt

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import DEFAULT_WEIGHT_BITS, SearchSpace, SubnetConfig


def _resolution(image_size: int, patch_size: int) -> str:
    return f"{image_size}/{patch_size}"


def hyperparameters_of(space: SearchSpace) -> kt.HyperParameters:
    """Every dimension of `space` as a KerasTuner choice (defaults: the smallest subnet)."""
    hp = kt.HyperParameters()
    smallest = space.smallest()
    hp.Choice("resolution", [_resolution(i, p) for i, p in space.image_patch_pairs()],
              default=_resolution(smallest.image_size, smallest.patch_size))
    for name in ("embed_dim", "depth", "rank_ratio"):
        hp.Choice(name, list(getattr(space, name)), ordered=True)
    for layer in range(max(space.depth)):
        deeper = [d for d in space.depth if d > layer]
        parent = {} if len(deeper) == len(space.depth) else {
            "parent_name": "depth", "parent_values": deeper}
        hp.Choice(f"num_heads_{layer}", list(space.num_heads), ordered=True, **parent)
        hp.Choice(f"mlp_ratio_{layer}", list(space.mlp_ratio), ordered=True, **parent)
    if len(space.weight_bits) > 1:
        hp.Choice("weight_bits", list(space.weight_bits), ordered=True)
    elif space.weight_bits != (DEFAULT_WEIGHT_BITS,):
        hp.Fixed("weight_bits", space.weight_bits[0])
    return hp


def config_from_values(space: SearchSpace, values: Mapping | kt.HyperParameters) -> SubnetConfig:
    """The subnet a trial's values describe (values of layers beyond its depth are ignored)."""
    if isinstance(values, kt.HyperParameters):
        values = values.values
    try:
        image, patch = (int(v) for v in str(values["resolution"]).split("/"))
        depth = int(values["depth"])
        config = space.make(
            image, patch, float(values["rank_ratio"]), int(values["embed_dim"]),
            [int(values[f"num_heads_{i}"]) for i in range(depth)],
            [float(values[f"mlp_ratio_{i}"]) for i in range(depth)],
            int(values.get("weight_bits", DEFAULT_WEIGHT_BITS)))
    except KeyError as missing:
        raise McuformerError(f"hyperparameter {missing.args[0]} missing for a subnet of "
                             f"space {space.name!r}") from None
    except ValueError:
        raise McuformerError(f"resolution {values['resolution']!r} is not image/patch") from None
    space.validate(config)
    return config


def values_of_config(config: SubnetConfig) -> dict:
    """The hyperparameter values that describe `config` (to seed an oracle with known subnets)."""
    values = {"resolution": _resolution(config.image_size, config.patch_size),
              "embed_dim": config.embed_dim, "depth": config.depth,
              "rank_ratio": config.rank_ratio}
    for layer in range(config.depth):
        values[f"num_heads_{layer}"] = config.num_heads[layer]
        values[f"mlp_ratio_{layer}"] = config.mlp_ratio[layer]
    if config.weight_bits != DEFAULT_WEIGHT_BITS:
        values["weight_bits"] = config.weight_bits
    return values
