"""What a search is asked to do (algorithm, trials, evolution settings), checked before KerasTuner and
TensorFlow are imported."""
from __future__ import annotations

import dataclasses

from mcuformer_tf.errors import McuformerError


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    algorithm: str = "evolution"
    trials: int = 200
    seed: int = 0
    population: int = 20
    parents: int = 5
    mutation_prob: float = 0.3
    crossover_prob: float = 0.5
    fine_tune_steps: int = 0

    def __post_init__(self):
        if self.trials < 1:
            raise McuformerError(f"--trials must be at least 1, got {self.trials}")

    def evolution_options(self) -> dict:
        if self.algorithm != "evolution":
            return {}
        return {"population_size": self.population, "parents": self.parents,
                "mutation_prob": self.mutation_prob, "crossover_prob": self.crossover_prob}

    def identity(self) -> dict:
        """What a resumed search must share with the original (the trial count may grow)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "trials"}
