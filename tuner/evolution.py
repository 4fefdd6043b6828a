"""The evolution oracle of MCUFormer and AutoFormer, as a KerasTuner `Oracle`.

The first `population_size` trials are random subnets. After that each trial is
a child of the `parents` best finished trials (top-k): with probability
`crossover_prob` a crossover of two parents (every dimension, and every layer,
taken from one of them), otherwise a mutation of one parent (each dimension and
each layer's heads and MLP ratio redrawn with probability `mutation_prob`; a
deeper child draws its new layers at random). The weight bits are a dimension
like the others where the space has both widths (no draw where it has one, so a
search of one width draws what it drew before weight widths existed). This is the steady-state form of
the generational search, so that several workers can draw children at once.

Only admissible children become trials: a child is kept when `admits(values)`
says so (always, here; the memory-budget mixin of `tuner.budget_oracle` checks
the budget) and when no trial had its values before; otherwise another child is
drawn. The random stream of the n-th proposal is seeded by (seed, n), and n is
part of the oracle's saved state, so a resumed search draws what the
uninterrupted one would have drawn.
"""
from __future__ import annotations

import random

from keras_tuner.engine import oracle as oracle_module
from keras_tuner.engine import trial as trial_module

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from tuner.hyperparameters import config_from_values, hyperparameters_of, values_of_config

RUNNING, STOPPED = trial_module.TrialStatus.RUNNING, trial_module.TrialStatus.STOPPED


def mutate(space: SearchSpace, parent: SubnetConfig, rng: random.Random,
           probability: float) -> SubnetConfig:
    """`parent` with each dimension (and each layer's heads and MLP ratio) redrawn with
    `probability`; layers added by a deeper depth are drawn at random."""
    def maybe(current, choices):
        return rng.choice(choices) if rng.random() < probability else current

    image, patch = maybe((parent.image_size, parent.patch_size), space.image_patch_pairs())
    depth = maybe(parent.depth, space.depth)
    heads = [maybe(parent.num_heads[i], space.num_heads) if i < parent.depth
             else rng.choice(space.num_heads) for i in range(depth)]
    ratios = [maybe(parent.mlp_ratio[i], space.mlp_ratio) if i < parent.depth
              else rng.choice(space.mlp_ratio) for i in range(depth)]
    bits = maybe(parent.weight_bits, space.weight_bits) if len(space.weight_bits) > 1 else parent.weight_bits
    return space.make(image, patch, maybe(parent.rank_ratio, space.rank_ratio),
                      maybe(parent.embed_dim, space.embed_dim), heads, ratios, bits)


def crossover(space: SearchSpace, a: SubnetConfig, b: SubnetConfig,
              rng: random.Random) -> SubnetConfig:
    """Every dimension from one parent or the other; layer i from a parent that has it."""
    def pick(x, y):
        return x if rng.random() < 0.5 else y

    image, patch = pick((a.image_size, a.patch_size), (b.image_size, b.patch_size))
    depth = pick(a.depth, b.depth)
    layers = [pick(a, b) if i < min(a.depth, b.depth) else (a if a.depth > i else b)
              for i in range(depth)]
    return space.make(image, patch, pick(a.rank_ratio, b.rank_ratio),
                      pick(a.embed_dim, b.embed_dim),
                      [parent.num_heads[i] for i, parent in enumerate(layers)],
                      [parent.mlp_ratio[i] for i, parent in enumerate(layers)],
                      pick(a.weight_bits, b.weight_bits) if len(space.weight_bits) > 1 else a.weight_bits)


class EvolutionOracle(oracle_module.Oracle):
    """Evolutionary search over the subnets of `space` (see the module docstring)."""

    def __init__(self, space: SearchSpace, objective=None, max_trials: int = 100,
                 population_size: int = 20, parents: int = 5, mutation_prob: float = 0.3,
                 crossover_prob: float = 0.5, draws_per_trial: int = 1000, seed: int | None = None,
                 **kwargs):
        if population_size < 2 or not 1 <= parents <= population_size:
            raise McuformerError(f"evolution needs a population of at least 2 and 1 to "
                                 f"{population_size} parents, got {population_size} and {parents}")
        for name, value in (("mutation probability", mutation_prob),
                            ("crossover probability", crossover_prob)):
            if not 0 <= value <= 1:
                raise McuformerError(f"{name} must be in [0, 1], got {value}")
        kwargs.setdefault("hyperparameters", hyperparameters_of(space))
        super().__init__(objective=objective, max_trials=max_trials, seed=seed, **kwargs)
        self.space = space
        self.population_size, self.parents = population_size, parents
        self.mutation_prob, self.crossover_prob = mutation_prob, crossover_prob
        self.draws_per_trial = draws_per_trial
        self._proposals = 0

    def admits(self, values: dict) -> bool:
        """Whether a candidate may become a trial (the budget mixin narrows this)."""
        return True

    def _parent_configs(self) -> list[SubnetConfig]:
        finished = [t for t in self.trials.values()
                    if t.status == trial_module.TrialStatus.COMPLETED and t.score is not None]
        best = sorted(finished, key=lambda t: t.score,
                      reverse=self.objective.direction == "max")[:self.parents]
        return [config_from_values(self.space, t.hyperparameters.values) for t in best]

    def _child(self, rng: random.Random, parents: list[SubnetConfig]) -> SubnetConfig:
        if len(self.start_order) < self.population_size or not parents:
            return self.space.sample(rng)
        if len(parents) >= 2 and rng.random() < self.crossover_prob:
            a, b = rng.sample(parents, 2)
            return crossover(self.space, a, b, rng)
        return mutate(self.space, rng.choice(parents), rng, self.mutation_prob)

    def populate_space(self, trial_id):
        parents = self._parent_configs()
        for _ in range(self.draws_per_trial):
            rng = random.Random(f"{self.seed}:{self._proposals}")
            self._proposals += 1
            values = values_of_config(self._child(rng, parents))
            if not self._duplicate(values) and self.admits(values):
                return {"status": RUNNING, "values": values}
        return {"status": STOPPED, "values": None}

    def get_state(self):
        state = super().get_state()
        state["evolution"] = {"proposals": self._proposals}
        return state

    def set_state(self, state):
        super().set_state(state)
        self._proposals = state.get("evolution", {}).get("proposals", 0)
