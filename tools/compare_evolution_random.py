"""Evolution against random search with the same number of feasible subnets, same seeds.

On a trained supernet (default: the demo's, runs/demo), under an SRAM budget that rejects at
least half of the space: for each seed, the best search-split accuracy that the evolution oracle finds
in --trials trials, and the best of --trials random subnets that fit the budget (drawn with the
same seed), each scored the same way (inherited supernet weights, the search split: see `data`). Then the
means over the seeds, and on how many seeds evolution did at least as well. Evolution runs with
AutoFormer's settings by default (population 50, the top 10 as parents, mutation probability
0.2); a population of 10 with 3 parents converges early and ties random search on the mean.
The demo's search split holds 239 images, so one image is 0.42 points: the best subnets of
either search differ by a few images, and a seed whose random draw is lucky can beat evolution.

    python tools/compare_evolution_random.py [--supernet runs/demo] [--trials 120]
        [--seeds 0 1 2 3 4 5] [--population 50] [--parents 10] [--mutation-prob 0.2]
        [--reject 0.6]
"""
import argparse
import random
import tempfile
from pathlib import Path

from mcuformer_tf.nas.data import load_data
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.training import load_supernet
from tuner.budget import budget_rejecting
from tuner.search import tune
from tuner.subnet_tuner import SubnetScorer
from tuner.tune_settings import TuneSettings


def random_feasible(space, budget, count, seed):
    rng, found = random.Random(seed), []
    while len(found) < count:
        config = space.sample(rng)
        if config not in found and budget.check(config).fits:
            found.append(config)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="runs/demo")
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--parents", type=int, default=10)
    parser.add_argument("--mutation-prob", type=float, default=0.2)
    parser.add_argument("--reject", type=float, default=0.6,
                        help="share of the space the budget should reject (>= 0.5)")
    args = parser.parse_args()
    run = RunDir(args.supernet)
    space = run.space()
    budget, rejected = budget_rejecting(space, args.reject)
    scorer = SubnetScorer(load_supernet(run), load_data(run.spec()["data"], max(space.image_size)))
    print(f"budget: {budget.describe()}: rejects {rejected:.0%} of random subnets")
    print(f"{'seed':>4} {'evolution':>10} {'random':>10}   ({args.trials} feasible subnets each)")
    totals, wins = [0.0, 0.0], 0
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            evolved = tune(run, budget, Path(out), TuneSettings(
                trials=args.trials, seed=seed, population=args.population, parents=args.parents,
                mutation_prob=args.mutation_prob),
                           progress=False, log=lambda *_: None, scorer=scorer).top[0].accuracy
        best_random = max(scorer(c) for c in random_feasible(space, budget, args.trials, seed))
        totals[0] += evolved
        totals[1] += best_random
        wins += evolved >= best_random
        print(f"{seed:>4} {evolved:>10.2%} {best_random:>10.2%}")
    n = len(args.seeds)
    print(f"{'mean':>4} {totals[0] / n:>10.2%} {totals[1] / n:>10.2%}")
    print(f"evolution at least as good as random on {wins} of {n} seeds, "
          f"{(totals[0] - totals[1]) / n * 100:+.2f} points on the mean")


if __name__ == "__main__":
    main()
