"""Measure compiled models and derive the memory model's fused-model constants from them.

Converts random configs of both presets to int8 .tflite as the tests do (a
fresh supernet: digits in the fresh-weight form and, like every deit-tiny-mcu
config, in the trained form with every weight moved by noise of std 0.05),
compiles each (`compile_model`), then prints:

- flash: the least-squares fit of the compiled file's structure bytes (all but
  its constants, quantisation parameters and offline plan, which the model
  counts exactly) on `memory.flash.fused_flash_features`, with its worst error:
  the numbers `memory.flash.FUSED_STRUCTURE_FIT` holds;
- persistent (with TFLM_ROOT, the host runner): TFLM's `arena_used_bytes`
  minus the compiler's plan for each model, less everything the model counts
  from sizeofs (`memory.persistent.fused_persistent` with a fixed part of 0): the
  values left, which are `memory.persistent.FUSED_PERSISTENT_FIXED` when the model is
  exact (one value).

    python tools/fit_fused_memory.py [--digits 50] [--deit 8] [--cache DIR]
"""
import argparse
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.memory.counts import fused_graph_counts
from mcuformer_tf.memory.flash import fused_counted_bytes, fused_flash_features
from mcuformer_tf.memory.form import FLOAT, FRESH_FLOAT
from mcuformer_tf.memory.persistent import fused_persistent
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.tflm.host_runner import host_runner_skip_reason, run_host

GENEROUS_ARENA = 1 << 25
PERTURBATION = 0.05


def configs(preset, count, seed):
    space, rng = SearchSpace.load(preset), random.Random(seed)
    return [space.sample(rng) for _ in range(count)]


def converter(preset, perturbation):
    """config -> int8 .tflite bytes from one fresh supernet of `preset` (moved by noise)."""
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize.convert import to_int8_tflite
    from mcuformer_tf.quantize.first_blocks import perturbed_supernet

    supernet = perturbed_supernet(SearchSpace.load(preset), perturbation)

    def convert(config):
        images = np.random.default_rng(0).uniform(
            0, 1, (8, config.image_size, config.image_size, 3)).astype(np.float32)
        return to_int8_tflite(extract_subnet(supernet, config), images)

    return convert


def samples(cache: Path, digits: int, deit: int):
    """(config, trained, compiled model path, non-persistent plan) per measured model."""
    plan = [("digits", False, 0, digits), ("digits", True, 1, digits),
            ("deit-tiny-mcu", True, 0, deit)]
    for preset, trained, seed, count in plan:
        convert = None
        for index, config in enumerate(configs(preset, count, seed)):
            path = cache / f"{preset}-{'trained' if trained else 'fresh'}-{seed}-{index}.tflite"
            if not path.exists():
                convert = convert or converter(preset, PERTURBATION if trained else 0.0)
                path.write_bytes(convert(config))
            compiled = compile_model(path.read_bytes())
            fused = path.with_suffix(".fused")
            fused.write_bytes(compiled.model_bytes)
            yield config, trained, fused, compiled.plan.size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=50, help="configs per form")
    parser.add_argument("--deit", type=int, default=8)
    parser.add_argument("--cache", help="keep the converted models here (reused next run)")
    args = parser.parse_args()
    skip = host_runner_skip_reason()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp)
        cache.mkdir(parents=True, exist_ok=True)
        rows, targets, fixed = [], [], Counter()
        for config, trained, fused, plan in samples(cache, args.digits, args.deit):
            counts = fused_graph_counts(config, FLOAT if trained else FRESH_FLOAT)
            rows.append(fused_flash_features(counts))
            targets.append(os.path.getsize(fused) - fused_counted_bytes(counts))
            if skip is None:
                _, used = run_host(fused, None, GENEROUS_ARENA)
                fixed[used - plan - fused_persistent(counts, fixed=0)] += 1
    features, targets = np.array(rows, float), np.array(targets, float)
    fit, *_ = np.linalg.lstsq(features, targets, rcond=None)
    fit = np.round(fit, 3)
    worst = np.abs(features @ fit - targets).max()
    print(f"{len(targets)} compiled models")
    print(f"FUSED_STRUCTURE_FIT = {tuple(float(c) for c in fit)}  # max |error| {worst:.0f} B")
    if skip is None:
        values = ", ".join(f"{value} ({count} models)" for value, count in sorted(fixed.items()))
        print(f"FUSED_PERSISTENT_FIXED: {values}")
    else:
        print(f"persistent not measured: {skip}")


if __name__ == "__main__":
    main()
