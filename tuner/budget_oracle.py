"""Memory-budget oracles: KerasTuner oracles that never start a trial over the target's budget.

`MemoryBudgetMixin` goes first in the bases of any KerasTuner oracle
(`class O(MemoryBudgetMixin, RandomSearchOracle)`). Inside `populate_space`,
before a trial exists, it checks each candidate the algorithm proposes against
the `Budget` (the memory model: thousands of candidates a second), counts and
remembers the rejected ones (their values hash joins the oracle's tried set, so
random draws skip them), and asks again. An algorithm that keeps proposing
infeasible points (a Bayesian optimum outside the budget) gets `retries`
chances, then the mixin draws random feasible points for it (counted as
fallbacks). It stops with `stop_reason` set when `max_rejections` candidates in
a row were rejected, and refuses to start at all, with the numbers, when no
subnet of the space fits (`budget.check_space_fits`). Every trial it creates
carries the predicted `arena`, `flash` (bytes), `macs` and `instructions` (the latency model's, of
one inference of the fused model) as metrics. A latency budget (`Budget.latency_ms`) is checked
in the same place, so a candidate over it never becomes a trial either.

Grid search computes its next point from the last trial's values, so rejecting
a point after the fact would end its walk: `FeasibleGridSearchOracle` skips
infeasible combinations where the grid computes them. The evolution oracle
draws only admissible children itself. Both ask the mixin through `admits`.

The budget oracles of `make_oracle` also write their project files only when a
trial ends (`tuner.trial_end_writes`).
"""
from __future__ import annotations

import time

import keras_tuner as kt
from keras_tuner.engine import trial as trial_module

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import SearchSpace
from tuner.budget import Budget, Verdict, check_space_fits
from tuner.evolution import EvolutionOracle
from tuner.hyperparameters import config_from_values, hyperparameters_of
from tuner.lost_trials import ReclaimsLostTrials
from tuner.trial_end_writes import WritesAtTrialEnd

RUNNING, STOPPED = trial_module.TrialStatus.RUNNING, trial_module.TrialStatus.STOPPED
OBJECTIVE = kt.Objective("search_accuracy", direction="max")
MEMORY_METRICS = ("arena", "flash", "macs", "instructions")
ALGORITHMS = ("evolution", "random", "bayesian", "grid")


class MemoryBudgetMixin:
    """Rejects candidates over `budget` inside `populate_space` (see the module docstring)."""

    def __init__(self, *args, space: SearchSpace, budget: Budget, retries: int = 20,
                 max_rejections: int = 10_000, **kwargs):
        check_space_fits(space, budget)
        kwargs.setdefault("hyperparameters", hyperparameters_of(space))
        kwargs.setdefault("objective", OBJECTIVE)
        super().__init__(*args, **self._base_kwargs(space, kwargs))
        if kwargs.get("seed") is not None:  # KerasTuner's Oracle draws a seed for seed=0
            self.seed = self._seed_state = kwargs["seed"]
        self.space, self.budget = space, budget
        self.retries, self.max_rejections = retries, max_rejections
        self.checked = self.rejected = self.fallbacks = 0
        self.check_seconds = 0.0
        self.stop_reason = None
        # The values admitted last and their verdict: checked once, however often asked.
        self._admitted, self._admitted_verdict = None, None

    def _base_kwargs(self, space: SearchSpace, kwargs: dict) -> dict:
        """The keyword arguments of the oracle class the mixin goes with."""
        return kwargs

    def verdict(self, values: dict) -> Verdict:
        return self.budget.check(config_from_values(self.space, values))

    def admits(self, values: dict) -> bool:
        """Check `values` against the budget; count and remember a rejection. Values a trial
        already had (an optimiser may propose its optimum again) are refused, uncounted."""
        key = self._compute_values_hash(values)
        if key in self._tried_so_far:
            return False
        if key == self._admitted:
            return True
        began = time.perf_counter()
        verdict = self.verdict(values)
        self.check_seconds += time.perf_counter() - began
        self.checked += 1
        if verdict.fits:
            self._admitted, self._admitted_verdict = key, verdict
            return True
        self.rejected += 1
        self._tried_so_far.add(key)
        return False

    def _random_feasible(self):
        values = self._random_values()
        status = STOPPED if values is None else RUNNING
        return {"status": status, "values": values}

    def populate_space(self, trial_id):
        for attempt in range(self.max_rejections):
            if attempt < self.retries:
                response = super().populate_space(trial_id)
            else:
                self.fallbacks += 1
                response = self._random_feasible()
            if response["status"] != RUNNING or self.admits(response["values"]):
                return response
        self.stop_reason = (f"{self.max_rejections} candidates in a row were over the budget "
                            f"({self.budget.describe()}): stopping")
        return {"status": STOPPED, "values": None}

    @kt.synchronized
    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if trial.status == RUNNING and not trial.metrics.exists(MEMORY_METRICS[0]):
            values = trial.hyperparameters.values
            verdict = (self._admitted_verdict if self._compute_values_hash(values) == self._admitted
                       else self.verdict(values))
            for name, value in verdict.metrics().items():
                trial.metrics.register(name, direction="min")
                trial.metrics.update(name, value)
            # Written with the trial when it ends; a trial interrupted before that is drawn
            # again after a resume and gets them here again.
        return trial

    def get_state(self):
        state = super().get_state()
        state["memory_budget"] = {"budget": self.budget.to_dict(), "checked": self.checked,
                                  "rejected": self.rejected, "fallbacks": self.fallbacks}
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state.get("memory_budget", {})
        if saved.get("budget", self.budget.to_dict()) != self.budget.to_dict():
            raise McuformerError(f"the search in {self._project_dir} was made for another budget "
                                 f"({saved['budget']}); choose another --out")
        for name in ("checked", "rejected", "fallbacks"):
            setattr(self, name, saved.get(name, 0))


class FeasibleGridSearchOracle(kt.oracles.GridSearchOracle):
    """Grid search over admissible points only: the next combination skips the others."""

    def admits(self, values: dict) -> bool:
        return True

    def _get_next_combination(self, values):
        while True:
            values = super()._get_next_combination(values)
            if values is None or self.admits(values):
                return values

    def populate_space(self, trial_id):
        first = not self.start_order
        response = super().populate_space(trial_id)
        if first and response["status"] == RUNNING and not self.admits(response["values"]):
            values = self._get_next_combination(response["values"])
            response = ({"status": STOPPED, "values": None} if values is None
                        else {"status": RUNNING, "values": values})
        return response


class BudgetRandomSearchOracle(MemoryBudgetMixin, ReclaimsLostTrials, WritesAtTrialEnd,
                               kt.oracles.RandomSearchOracle):
    """Random search over the subnets that fit the budget."""


class BudgetBayesianOptimizationOracle(MemoryBudgetMixin, ReclaimsLostTrials, WritesAtTrialEnd,
                                       kt.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation over the subnets that fit the budget.

    A fitted Gaussian process proposes its optimum again when asked again (and each proposal
    costs dozens of optimiser restarts), so in place of an infeasible optimum a random feasible
    point is drawn."""

    def __init__(self, *args, retries: int = 1, **kwargs):
        super().__init__(*args, retries=retries, **kwargs)


class BudgetGridSearchOracle(MemoryBudgetMixin, ReclaimsLostTrials, WritesAtTrialEnd, FeasibleGridSearchOracle):
    """Grid search over the subnets that fit the budget."""


class BudgetEvolutionOracle(MemoryBudgetMixin, ReclaimsLostTrials, WritesAtTrialEnd, EvolutionOracle):
    """Evolutionary search whose children all fit the budget."""

    def _base_kwargs(self, space: SearchSpace, kwargs: dict) -> dict:
        return {**kwargs, "space": space}


def make_oracle(algorithm: str, space: SearchSpace, budget: Budget, max_trials: int,
                seed: int = 0, **evolution) -> MemoryBudgetMixin:
    """The budget oracle of `algorithm` (evolution, random, bayesian or grid)."""
    common = {"space": space, "budget": budget, "max_trials": max_trials, "seed": seed}
    if algorithm == "evolution":
        return BudgetEvolutionOracle(**common, **evolution)
    if evolution:
        raise McuformerError(f"{', '.join(evolution)}: options of the evolution algorithm only")
    classes = {"random": BudgetRandomSearchOracle, "bayesian": BudgetBayesianOptimizationOracle,
               "grid": BudgetGridSearchOracle}
    if algorithm not in classes:
        raise McuformerError(f"unknown algorithm {algorithm!r} (use one of: "
                             f"{', '.join(ALGORITHMS)})")
    return classes[algorithm](**common)
