"""Which subnets fit a board's internal flash at 8-bit and at 4-bit (packed INT4) weights, by the tuner.

For one space and target (default: deit-tiny-mcu on the STM32H743, 2 MiB of flash), at each
weight width: the share of 2,000 random subnets the budget admits, then a `tune` search (the
budget oracle and the subnet tuner, evolution) or, where no subnet fits, the one line `tune`
exits with. No deit-tiny-mcu supernet is trained here, so by default a subnet's score is its
MACs over the space's largest subnet's (compute, which tracks a ViT's accuracy better than its
parameter count; the search then finds the largest subnets the budget admits); `--supernet RUN`
scores search-split accuracy (see `data`) on that trained run instead.

    python tools/compare_weight_bits.py [--space deit-tiny-mcu] [--target stm32h743] [--trials 60]
    python tools/compare_weight_bits.py --space deit-tiny-mcu-int4 --target stm32f746
"""
import argparse
import dataclasses
import tempfile
from pathlib import Path

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.search_space import WEIGHT_BITS, SearchSpace
from tuner.budget import Budget, check_space_fits, format_size, resolve_target
from tuner.search import tune
from tuner.tune_settings import TuneSettings


class MacShare:
    """A subnet's MACs over the space's largest subnet's: a score with no supernet."""

    def __init__(self, space: SearchSpace):
        self.largest = space.largest().mac_count()

    def __call__(self, config) -> float:
        return config.mac_count() / self.largest


def _run_and_scorer(args, space: SearchSpace, folder: Path):
    if args.supernet is None:
        run = RunDir(folder / "run")
        run.create({"space": space.to_dict(), "data": "digits"})
        return run, MacShare(space), "MACs / the largest subnet's"
    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.training import load_supernet
    from tuner.subnet_tuner import SubnetScorer

    run = RunDir(args.supernet)
    data = load_data(run.spec()["data"], max(run.space().image_size))
    return run, SubnetScorer(load_supernet(run), data), "search acc"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="deit-tiny-mcu")
    parser.add_argument("--supernet", default=None, help="A trained run whose space is searched (else --space).")
    parser.add_argument("--target", default="stm32h743")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    budget = Budget(resolve_target(args.target))
    with tempfile.TemporaryDirectory() as folder:
        base = RunDir(args.supernet).space() if args.supernet else SearchSpace.load(args.space)
        run, scorer, score_name = _run_and_scorer(args, base, Path(folder))
        print(f"{base.name} on {budget.describe()}; evolution, {args.trials} trials, seed {args.seed}, "
              f"score: {score_name}")
        for bits in sorted(WEIGHT_BITS, reverse=True):
            space = dataclasses.replace(base, weight_bits=(bits,))
            sample = space.sample_many(2000, seed=7)
            admitted = sum(budget.check(c).fits for c in sample) / len(sample)
            print(f"{bits}-bit weights: the budget admits {admitted:.1%} of 2,000 random subnets")
            try:
                check_space_fits(space, budget)
            except McuformerError as err:
                print(f"  tune: {err}")
                continue
            result = tune(run, budget, Path(folder) / f"w{bits}", TuneSettings(trials=args.trials, seed=args.seed),
                          space=space, progress=False, log=lambda *_: None, scorer=scorer)
            print(f"  {'score':>8} {'arena':>10} {'flash':>10} {'params':>8} {'MMACs':>7}  subnet")
            for r in result.top:
                print(f"  {r.accuracy:>8.2%} {format_size(r.arena):>10} {format_size(r.flash):>10} "
                      f"{r.config.parameter_count() / 1e6:>7.2f}M {r.macs / 1e6:>7.1f}  {r.config.describe()}")


if __name__ == "__main__":
    main()
