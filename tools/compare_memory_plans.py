"""The paper's thesis, measured: the fused memory plan admits better subnets at the same SRAM.

On a trained supernet (default: the demo's, runs/demo), one SRAM budget (default: where the
two plans admit different shares of the space), an evolution search under each memory plan
(`--memory-plan unfused`: stock TFLM's arena; `fused`: our MCUF operators' offline plan),
side by side: the share of random subnets each plan admits, the best search-split accuracy, its
predicted arena and flash, and its config.

    python tools/compare_memory_plans.py [--supernet runs/demo] [--sram 72KiB] [--trials 80]
"""
import argparse
import tempfile
from pathlib import Path

from mcuformer_tf.nas.data import load_data
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.training import load_supernet
from tuner.budget import Budget, format_size, resolve_target
from tuner.search import tune
from tuner.subnet_tuner import SubnetScorer
from tuner.tune_settings import TuneSettings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="runs/demo")
    parser.add_argument("--sram", default="72KiB")
    parser.add_argument("--flash", default="1MiB")
    parser.add_argument("--trials", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = RunDir(args.supernet)
    space = run.space()
    scorer = SubnetScorer(load_supernet(run), load_data(run.spec()["data"], max(space.image_size)))
    target = resolve_target("custom", args.sram, args.flash)
    sample = space.sample_many(2000, seed=7)
    rows = {}
    for plan in ("unfused", "fused"):
        budget = Budget(target, plan)
        admitted = sum(budget.check(c).fits for c in sample) / len(sample)
        with tempfile.TemporaryDirectory() as out:
            best = tune(run, budget, Path(out), TuneSettings(trials=args.trials, seed=args.seed),
                        progress=False, log=lambda *_: None, scorer=scorer).top[0]
        rows[plan] = (admitted, best)
    print(f"SRAM {format_size(target.sram)} (runtime {format_size(target.runtime_sram)} outside "
          f"the arena), evolution, {args.trials} trials, seed {args.seed}")
    for plan, (admitted, best) in rows.items():
        print(f"{plan:>8}: admits {admitted:>4.0%} of the space; best search acc "
              f"{best.accuracy:.2%}, arena {format_size(best.arena)}, flash "
              f"{format_size(best.flash)}, {best.macs / 1e6:.2f} MMACs: {best.config.describe()}")
    gain = rows["fused"][1].accuracy - rows["unfused"][1].accuracy
    print(f"fused - unfused best accuracy: {gain * 100:+.2f} points")


if __name__ == "__main__":
    main()
