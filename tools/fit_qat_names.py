"""Measure QAT exports and derive the memory model's QAT_NAMES_FIT from them.

The structure fits (`memory.flash.STRUCTURE_FIT`, `FUSED_STRUCTURE_FIT`) were made on the
converter's float forms; the QAT export's tensor names (subnet/quant_block<i>_<layer>/...) are
longer. This tool exports random configs of each preset through `export`'s pipeline with no QAT
epoch (`calibrated_int8_tflite` on digits images at the subnet's size, one calibration batch: the
names, not the values, are measured) from a fresh supernet moved by noise, at the preset's weight
bits, compiles each, and prints the least-squares fit of what each file holds beyond the float-form
estimate (`unfused_flash`, `fused_flash` of the QAT counts) on `memory.flash.qat_names_features`,
per model, with the worst error per preset: the numbers QAT_NAMES_FIT holds.
tests/test_memory_model.py checks them on other configs (`make test-all`).

    python tools/fit_qat_names.py [--digits 12] [--deit 8] [--cache DIR]

A deit-tiny-mcu export takes about 3 minutes on 2 cores; --cache keeps the exports for the next run.
"""
import argparse
import dataclasses
import hashlib
import random
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.memory.counts import fused_graph_counts, graph_counts
from mcuformer_tf.memory.flash import QAT_NAMES_FIT, fused_flash, qat_names_features, unfused_flash
from mcuformer_tf.memory.form import QAT
from mcuformer_tf.nas.search_space import SearchSpace

PRESETS = ("digits", "deit-tiny-mcu", "deit-tiny-mcu-int4")


def configs(preset: str, count: int) -> list:
    """`count` random configs of `preset` (seed 0; the tests check those of seed 5), their rank
    ratios spread evenly over the preset's, so that blocks with every linear low-rank, some and
    none are among them."""
    space, rng = SearchSpace.load(preset), random.Random(0)
    ranks = space.rank_ratio
    return [dataclasses.replace(space.sample(rng), rank_ratio=ranks[round(i * (len(ranks) - 1) / max(1, count - 1))])
            for i in range(count)]


def exporter(preset: str):
    """config -> its QAT-form .tflite bytes from one fresh supernet of `preset` moved by noise."""
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize.export import calibrated_int8_tflite
    from mcuformer_tf.quantize.first_blocks import perturbed_supernet

    supernet, data = perturbed_supernet(SearchSpace.load(preset)), load_digits(32)

    def export(config):
        return calibrated_int8_tflite(extract_subnet(supernet, config), data, count=4,
                                      weight_bits=config.weight_bits, calibration_batches=1)

    return export


class Sample(NamedTuple):
    preset: str
    config: object  # the SubnetConfig
    unfused: int  # the exported file's bytes beyond the float-form estimate of its QAT counts
    fused: int  # the compiled file's, likewise
    features: tuple  # `qat_names_features`


def samples(cache: Path, counts: dict):
    """A Sample per export, exported once per cache."""
    for preset in PRESETS:
        export = None
        for config in configs(preset, counts[preset]):
            path = cache / f"{preset}-{hashlib.sha256(config.describe().encode()).hexdigest()[:12]}.tflite"
            if not path.exists():
                export = export or exporter(preset)
                path.write_bytes(export(config))
            raw = path.read_bytes()
            form = QAT._replace(weight_bits=config.weight_bits)
            fused = fused_graph_counts(config, form)
            yield Sample(preset, config, len(raw) - unfused_flash(graph_counts(config, form)),
                         len(compile_model(raw).model_bytes) - fused_flash(fused), qat_names_features(fused))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=12, help="digits configs")
    parser.add_argument("--deit", type=int, default=8, help="configs per deit-tiny-mcu preset")
    parser.add_argument("--cache", help="keep the exports here (reused next run)")
    args = parser.parse_args()
    counts = {"digits": args.digits, "deit-tiny-mcu": args.deit, "deit-tiny-mcu-int4": args.deit}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp)
        cache.mkdir(parents=True, exist_ok=True)
        rows = list(samples(cache, counts))
    features = np.array([row.features for row in rows], float)
    presets = np.array([row.preset for row in rows])
    print(f"{len(rows)} QAT exports: " + ", ".join(f"{counts[p]} {p}" for p in PRESETS))
    for model in ("unfused", "fused"):
        targets = np.array([getattr(row, model) for row in rows], float)
        fit, *_ = np.linalg.lstsq(features, targets, rcond=None)
        fit = np.round(fit, 1)
        errors = features @ fit - targets
        old = features @ np.array(QAT_NAMES_FIT[model]) - targets
        worst = ", ".join(f"{p} {np.abs(errors[presets == p]).max():.0f} B"
                          f" (QAT_NAMES_FIT: {np.abs(old[presets == p]).max():.0f} B)" for p in PRESETS
                          if p in presets)
        print(f'"{model}": {tuple(float(c) for c in fit)}  # max |error| {worst}')
    for row in rows:
        print(f"  {row.preset:<19} {row.config.describe():<48} beyond float form: unfused {row.unfused:+,} B, "
              f"fused {row.fused:+,} B")


if __name__ == "__main__":
    main()
