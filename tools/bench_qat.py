"""What quantisation costs: float, QAT and int8-in-TFLM accuracy of exports over seeds.

Exports the demo's tuned subnet and the largest subnet of the demo's supernet with --seeds QAT
seeds each (the `export` path: QAT recipe, int8 .tflite, the stock TFLM wheel) and prints per
export the float, QAT and int8 accuracy on the val split (which nothing trained on and the tuner
did not choose on: it scores subnets on the search split, see `data`); float and int8 on the val
images shifted by one pixel (the 8 shifts of each, zero-filled: 8x the val split, so one image is
1/8 of a val image's weight); and float and int8 on all the training images (3.3x val: the
supernet has seen them, so it measures fidelity to float, not generalisation); then the
float-to-int8 drop's mean and worst over the exports, on each split.
Targets (issue 15): mean drop at most 0.5 points, worst at most 1.5, on val.
With --weight-bits 8 4 each export is made at both weight grids (issue 19: the 4-bit one packed
into INT4 tensors, as `export --weight-bits 4` writes it), same subnet, seed and QAT epochs, side
by side; the drop summary is printed per grid (issue 19's target for 4 bits: at most 2 points).

The demo's run (default runs/demo) is made by `mcuformer-tf demo` first when it has no tuned
subnet yet. Recipe options change one setting of the default recipe, to measure it.

    python tools/bench_qat.py [--demo-run runs/demo] [--seeds 5] [--first-seed 0] [--epochs 4] [--lr 3e-4]
        [--batch-size 16] [--warmup-epochs 1] [--no-distill] [--no-keep-best] [--frozen-range-epochs 1]
        [--epsilon-fraction 0.015625] [--mixup 1.0] [--weight-bits 8 [4]] [--subnets tuned largest]

The recipe before issue 15: --warmup-epochs 0 --no-distill --no-keep-best --frozen-range-epochs 0 --lr 1e-4
--batch-size 32 --mixup 0; issue 15's first recipe: --lr 1e-4 --batch-size 32 --mixup 0.
"""
import argparse
import dataclasses
import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mcuformer_tf.compiler.int4_weights import pack_int4_model
from mcuformer_tf.nas.data import load_data
from mcuformer_tf.nas.evaluation import EVAL_BATCH, accuracy, traced_predict
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.training import load_supernet
from mcuformer_tf.quantize.export import export_subnet
from mcuformer_tf.quantize.int8_accuracy import tflm_accuracy
from mcuformer_tf.quantize.qat_recipe import QatRecipe

TARGET_MEAN, TARGET_WORST = 0.5, 1.5  # points
TARGET_INT4 = 2.0  # points, the 4-bit export's drop from float on val


def _demo_run(path: Path) -> Path:
    """The demo's run directory, made by `mcuformer-tf demo` when it has no tuned subnet."""
    best = path / "tune" / "best_config.json"
    if not best.is_file():
        print(f"{best} missing: running `mcuformer-tf demo --out {path}` first", flush=True)
        subprocess.run([sys.executable, "-m", "mcuformer_tf", "demo", "--out", str(path)], check=True)
    return best


def _train_split(data, image_size):
    """Every training image, unaugmented, at `image_size`, in batches."""
    return data.at_size(data.train, image_size).batch(EVAL_BATCH)


def _shifted_val(data, image_size):
    """Every val image shifted by one pixel in each of the 8 directions (zero-filled, as the training
    crops pad), at `image_size`, in batches."""
    import tensorflow as tf

    val = data.at_size(data.val, image_size)

    def shifted(dx, dy):
        def shift(image, label):
            padded = tf.image.pad_to_bounding_box(image, 1, 1, image_size + 2, image_size + 2)
            return tf.image.crop_to_bounding_box(padded, 1 + dy, 1 + dx, image_size, image_size), label
        return val.map(shift)

    shifts = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
    return functools.reduce(tf.data.Dataset.concatenate, [shifted(*s) for s in shifts]).batch(EVAL_BATCH)


def _row(name, seed, result, floats, int8s):
    """One export's line; `floats` and `int8s` hold the shifted-val and training-image accuracies."""
    drops = [(result.float_accuracy - result.int8_accuracy) * 100] + [
        (f - i) * 100 for f, i in zip(floats, int8s)]
    cells = "   ".join(f"{f:8.2%} {i:8.2%} {d:+7.2f}" for f, i, d in zip(floats, int8s, drops[1:]))
    print(f"{name:<8} {seed:>4} {result.weight_bits:>4}  {result.float_accuracy:8.2%} {result.qat_accuracy:8.2%} "
          f"{result.int8_accuracy:8.2%} {drops[0]:+7.2f}   {cells}", flush=True)
    return drops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    defaults = QatRecipe()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument("--frozen-range-epochs", type=int, default=defaults.frozen_range_epochs)
    parser.add_argument("--epsilon-fraction", type=float, default=defaults.epsilon_fraction)
    parser.add_argument("--mixup", type=float, default=defaults.mixup)
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument("--no-keep-best", action="store_true")
    parser.add_argument("--weight-bits", type=int, nargs="+", choices=(8, 4), default=[8])
    parser.add_argument("--subnets", nargs="+", choices=("tuned", "largest"), default=["tuned", "largest"])
    args = parser.parse_args()
    recipe = dataclasses.replace(defaults, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                                 warmup_epochs=args.warmup_epochs,
                                 frozen_range_epochs=args.frozen_range_epochs, epsilon_fraction=args.epsilon_fraction,
                                 mixup=args.mixup,
                                 distill=not args.no_distill, keep_best=not args.no_keep_best)
    best = _demo_run(args.demo_run)
    run = RunDir(args.demo_run)
    space = run.space()
    supernet = load_supernet(run)
    data = load_data(run.spec()["data"], max(space.image_size))
    print(f"{recipe}\nsupernet {run.path}; val {data.val_count} images, train {data.train_count}")
    pair = f"{'float':>8} {'int8':>8} {'drop':>7}"
    print(f"{'subnet':<8} {'seed':>4} {'bits':>4}  {'float':>8} {'QAT':>8} {'int8':>8} {'drop':>7}   {pair}   {pair}"
          f"\n{'':<19}{'--- val split ---':^35}   {'--- val shifted 1 pixel ---':^26}   "
          f"{'--- all training images ---':^26}")
    drops = {bits: [] for bits in args.weight_bits}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in (("tuned", str(best)), ("largest", "largest")):
            if name not in args.subnets:
                continue
            config = space.resolve_config(spec)
            splits = [_shifted_val(data, config.image_size), _train_split(data, config.image_size)]
            predict = traced_predict(extract_subnet(supernet, config))
            floats = [accuracy(predict, split) for split in splits]
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for bits in args.weight_bits:
                    result = export_subnet(supernet, config, data, Path(tmp) / f"{name}-{seed}-{bits}.tflite",
                                           dataclasses.replace(recipe, weight_bits=bits), seed=seed,
                                           progress=False, finish=pack_int4_model if bits == 4 else None)
                    int8s = [tflm_accuracy(result.path.read_bytes(), split) for split in splits]
                    drops[bits].append(_row(name, seed, result, floats, int8s))
    for bits, rows in drops.items():
        drop_val, drop_shifted, drop_train = np.array(rows).T
        met = (drop_val.mean() <= TARGET_MEAN and drop_val.max() <= TARGET_WORST if bits == 8
               else drop_val.max() <= TARGET_INT4)
        target = (f"mean <= {TARGET_MEAN}, worst <= {TARGET_WORST}" if bits == 8 else f"worst <= {TARGET_INT4}")
        print(f"{bits}-bit weights: float-to-int8 drop over {len(rows)} exports, points: val mean "
              f"{drop_val.mean():+.2f} worst {drop_val.max():+.2f}; val shifted 1 pixel mean "
              f"{drop_shifted.mean():+.2f} worst {drop_shifted.max():+.2f}; all training images mean "
              f"{drop_train.mean():+.2f} worst {drop_train.max():+.2f} (target on val: {target}: "
              f"{'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
