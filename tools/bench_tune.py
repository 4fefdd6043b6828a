"""Tuning overhead: how fast the budget oracle checks candidates, and what share of a search
is spent outside scoring subnets (the target is under 5%).

On a trained supernet (default: the demo's, runs/demo) with a budget that rejects about half
the space: (1) budget checks per second, cold (fresh memory-model caches) and warm, and
candidates per second through an evolution oracle's `populate_space` (rejections included);
(2) a search of --trials trials: total seconds, seconds scoring subnets, the rest as a share.

    python tools/bench_tune.py [--supernet runs/demo] [--trials 100]
"""
import argparse
import tempfile
import time
from pathlib import Path

from mcuformer_tf.run_dir import RunDir
from mcuformer_tf.targets import RUNTIME_SRAM
from tuner.budget import Budget, footprint, resolve_target
from tuner.budget_oracle import make_oracle
from tuner.search import TuneSettings, tune


def half_budget(space) -> Budget:
    """SRAM at the median fused arena of random subnets (plus the runtime share)."""
    arenas = sorted(footprint(c, "fused").arena for c in space.sample_many(500, seed=7))
    return Budget(resolve_target("custom", str(arenas[len(arenas) // 2] + RUNTIME_SRAM), "1MiB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="runs/demo")
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    run = RunDir(args.supernet)
    space = run.space()
    budget = half_budget(space)
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

    with tempfile.TemporaryDirectory() as out:
        result = tune(run, budget, Path(out), TuneSettings(trials=args.trials), progress=False,
                      log=lambda *_: None)
    outside = result.seconds - result.eval_seconds
    print(f"search of {result.finished} trials: {result.seconds:.1f} s, scoring subnets "
          f"{result.eval_seconds:.1f} s, outside scoring {outside:.2f} s = "
          f"{outside / result.seconds:.1%} of the search (target < 5%)")


if __name__ == "__main__":
    main()
