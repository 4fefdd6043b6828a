"""Latency as a budget, measured: the best subnet of a trained supernet at three latency budgets.

On a trained supernet (default: the demo's, runs/demo), one memory budget (default: the demo's,
48 KiB of SRAM on the stm32f746 profile, fused plan) and three latency budgets (default: the
25th and 50th percentile of the latency model's time of random subnets at the target's clock, and
none), an evolution search under each with the same seed and trials, side by side: the share of
random subnets each budget admits, the best search-split accuracy, the latency model's time of that subnet,
its arena and its config. The searches share one loaded supernet.

    python tools/compare_latency_budgets.py [--supernet runs/demo] [--latency 40ms --latency 80ms]
        [--sram 48KiB] [--trials 60] [--seed 0]
"""
import argparse
import tempfile
from pathlib import Path

from mcuformer_tf.board import latency
from mcuformer_tf.nas.data import load_data
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.training import load_supernet
from tuner.budget import Budget, format_size, parse_duration, resolve_target
from tuner.search import tune
from tuner.subnet_tuner import SubnetScorer
from tuner.tune_settings import TuneSettings

QUANTILES = (0.25, 0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="runs/demo")
    parser.add_argument("--target", default="stm32f746")
    parser.add_argument("--sram", default="48KiB")
    parser.add_argument("--latency", action="append", help="a latency budget (repeat; default: two quantiles)")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = RunDir(args.supernet)
    space = run.space()
    target = resolve_target(args.target, args.sram)
    sample = space.sample_many(2000, seed=7)
    memory = Budget(target)
    fitting = sorted(memory.milliseconds(latency.instructions(c)) for c in sample if memory.check(c).fits)
    budgets = [parse_duration(text) for text in args.latency] if args.latency else \
        [round(fitting[int(q * len(fitting))], 1) for q in QUANTILES]
    scorer = SubnetScorer(load_supernet(run), load_data(run.spec()["data"], max(space.image_size)))
    settings = TuneSettings(trials=args.trials, seed=args.seed, population=args.population)
    print(f"{memory.describe()}; evolution, {args.trials} trials, population {args.population}, seed {args.seed}")
    print(f"{'latency budget':>15} {'admits':>7} {'best search acc':>16} {'its latency':>12} {'arena':>10}  subnet")
    for latency_ms in [*budgets, None]:
        budget = Budget(target, latency_ms=latency_ms)
        admitted = sum(budget.check(c).fits for c in sample) / len(sample)
        with tempfile.TemporaryDirectory() as out:
            best = tune(run, budget, Path(out), settings, progress=False, log=lambda *_: None,
                        scorer=scorer).top[0]
        label = "none" if latency_ms is None else f"{latency_ms:g} ms"
        print(f"{label:>15} {admitted:>7.0%} {best.accuracy:>16.2%} "
              f"{budget.milliseconds(best.instructions):>9.1f} ms {format_size(best.arena):>10}  "
              f"{best.config.describe()}")


if __name__ == "__main__":
    main()
