"""Tuning overhead: how fast the budget oracle checks candidates, and what share of a search
is spent outside scoring subnets (the target is under 5%).

On a trained supernet (default: the demo's, runs/demo) with a budget that rejects about half
the space: (1) budget checks per second, cold (fresh memory-model caches) and warm, and
candidates per second through an evolution oracle's `populate_space` (rejections included);
(2) a search of --trials trials: total seconds, seconds scoring subnets, the rest per trial and
as a share. The rest is a fixed cost a trial (KerasTuner's trial bookkeeping, its two writes, the
budget checks), so its share depends on what a subnet costs to score: (3) the same search over
a deit-tiny-mcu supernet, --deit-trials trials scoring 224-pixel subnets on the digits
search split (fresh weights: the accuracies mean nothing, the seconds are real; 0 skips it).

    python tools/bench_tune.py [--supernet runs/demo] [--trials 100] [--deit-trials 8]
"""
import argparse
import tempfile
import time
from pathlib import Path

from mcuformer_tf.nas.run_dir import RunDir
from tuner.budget import budget_rejecting
from tuner.budget_oracle import make_oracle
from tuner.search import tune
from tuner.tune_settings import TuneSettings


def search_overhead(run: RunDir, trials: int, target: str = "custom", scorer=None) -> str:
    """One search of `trials` trials under a budget rejecting about half of the run's space."""
    with tempfile.TemporaryDirectory() as out:
        budget, _ = budget_rejecting(run.space(), 0.5, samples=500, target=target)
        result = tune(run, budget, Path(out), TuneSettings(trials=trials), progress=False,
                      log=lambda *_: None, scorer=scorer)
    outside = result.seconds - result.eval_seconds
    return (f"{result.finished} trials of {run.space().name}: {result.seconds:.1f} s, scoring "
            f"{result.eval_seconds / result.finished * 1e3:,.0f} ms a trial, outside scoring "
            f"{outside / result.finished * 1e3:.1f} ms a trial = {outside / result.seconds:.1%} "
            "of the search (target < 5%)")


def deit_scale(trials: int) -> str:
    """`search_overhead` on a fresh deit-tiny-mcu supernet scoring on digits at 224 pixels, on
    the disco board (no deit subnet fits the 1 MiB internal flash: its weights go to QSPI)."""
    import numpy as np

    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.nas.supernet import Supernet
    from tuner.subnet_tuner import SubnetScorer

    space = SearchSpace.load("deit-tiny-mcu")
    size = max(space.image_size)
    supernet = Supernet(space)
    supernet(np.zeros((1, size, size, 3), np.float32))
    with tempfile.TemporaryDirectory() as path:
        run = RunDir(path)
        run.create({"space": space.to_dict(), "data": "digits"})
        return search_overhead(run, trials, "stm32f746-disco",
                               SubnetScorer(supernet, load_data("digits", size)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="runs/demo")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--deit-trials", type=int, default=8)
    args = parser.parse_args()
    run = RunDir(args.supernet)
    space = run.space()
    budget, _ = budget_rejecting(space, 0.5, samples=500)
    configs = space.sample_many(3000, seed=11)
    began = time.perf_counter()
    feasible = sum(budget.check(c).fits for c in configs)
    cold = len(configs) / (time.perf_counter() - began)
    began = time.perf_counter()
    for c in configs:
        budget.check(c)
    warm = len(configs) / (time.perf_counter() - began)
    print(f"budget: {budget.describe()}; {1 - feasible / len(configs):.0%} of random subnets "
          "rejected")
    print(f"budget checks: {cold:,.0f}/s cold, {warm:,.0f}/s warm")

    oracle = make_oracle("evolution", space, budget, max_trials=10**6, seed=0)
    oracle._set_project_dir(tempfile.mkdtemp(), "bench")
    began = time.perf_counter()
    for k in range(300):
        oracle.populate_space(str(k))
    seconds = time.perf_counter() - began
    print(f"evolution oracle: {oracle.checked / seconds:,.0f} candidates checked/s "
          f"({oracle.rejected} of {oracle.checked} rejected, 300 trials proposed)")

    print(f"search of {search_overhead(run, args.trials)}")
    if args.deit_trials:
        print(f"search of {deit_scale(args.deit_trials)}")


if __name__ == "__main__":
    main()
