"""Fit the latency model (mcuformer_tf/board/latency.py) on the emulated Cortex-M7 and print its error.

One command: converts subnets of fresh supernets (the counts do not depend on the weights' values),
runs every MCUF kernel of each in the kernel test firmware (DSP loops, qemu mps2-an500, -icount
shift=0) and one whole inference of its fused model as firmware (deploy, TFLM_ROOT and TFLM_M7_LIB:
the builtins of the tail on that library's kernels), fits each kernel's cost per loop trip to the
kernel counts and the tail's to the whole inference minus its kernels (non-negative least squares),
writes them to mcuformer_tf/board/latency_fit.py, then checks the model on subnets it was not fitted
on: whole inferences of 20 random digits subnets, 4 in QAT form, 6 with INT4 weights and, with
--paper, of 10 random deit-tiny-mcu first blocks (one block + 1000-class head) and 4 with INT4
weights, and prints the worst error of each set and of the int8 and INT4 ones, and the model's
configs per second.

Models are the converter's form of fresh weights (per-channel kernels) unless said QAT (export's
form with no fine-tune epoch, ranges from 16 digits images, resized for the paper-scale ones:
per-tensor kernels, LayerNorms with gamma and beta); INT4 ones are that QAT form at weight_bits 4,
packed as `export --weight-bits 4` writes them. Fit set: 6 random digits subnets and the space's
largest and smallest, 2 random digits subnets in QAT form, the four paper-scale first blocks of
quantize.first_blocks (their 1000-class head sets the tail's cost per class), and with INT4
weights 10 random digits subnets, the largest and smallest, and the four first blocks. Counts are
kept in --counts (JSON, by form and config), so a rerun measures only what is new; delete it after
the kernels change.

    python tools/fit_latency_model.py [--paper] [--no-fit] [--counts runs/latency_counts.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

from mcuformer_tf.board import deploy, kernel_test, latency, targets  # noqa: E402
from mcuformer_tf.compiler.pipeline import compile_model  # noqa: E402
from mcuformer_tf.errors import McuformerError  # noqa: E402
from mcuformer_tf.memory.form import FRESH_FLOAT, QAT  # noqa: E402
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig  # noqa: E402
from mcuformer_tf.quantize import first_blocks  # noqa: E402

FIT_DIGITS, CHECK_DIGITS, CHECK_DEIT, FIT_QAT, CHECK_QAT = 6, 20, 10, 2, 4
FIT_SEED, CHECK_SEED, QAT_FIT_SEED, QAT_CHECK_SEED = 101, 202, 303, 404
FIT_INT4, CHECK_INT4, CHECK_DEIT_INT4 = 10, 6, 4
INT4_FIT_SEED, INT4_CHECK_SEED, DEIT_INT4_CHECK_SEED = 505, 606, 707
FORMS = {"fresh": FRESH_FLOAT, "qat": QAT}  # the converter's form of fresh weights; export's QAT form
EMULATOR_ARENA = 3 << 20  # the emulator-only profile: room for any model here; counts do not depend on it
FIT_MODULE = Path(latency.__file__).with_name("latency_fit.py")


def first_block(config: SubnetConfig) -> SubnetConfig:
    return dataclasses.replace(config, depth=1, num_heads=config.num_heads[:1], mlp_ratio=config.mlp_ratio[:1])


def random_first_blocks(space: SearchSpace, count: int, seed: int) -> list:
    rng = random.Random(seed)
    return [first_block(space.sample(rng)) for _ in range(count)]


def int4(configs: list) -> list:
    return [dataclasses.replace(config, weight_bits=4) for config in configs]


def export_form(form: str, config: SubnetConfig):
    """The latency model's ExportForm of a measured (form, config)."""
    return FORMS[form]._replace(weight_bits=config.weight_bits)


class Counts:
    """Measured counts by form and config: {'kernels': {case kind+number: instructions}, 'firmware': n}."""

    def __init__(self, path: Path, work: Path):
        self.path, self.work = path, work
        self.saved = json.loads(path.read_text()) if path.is_file() else {}
        self.supernets = {}

    def _model(self, space: SearchSpace, config: SubnetConfig, form: str) -> bytes:
        if space.name not in self.supernets:
            self.supernets[space.name] = first_blocks.fresh_supernet(space)
        if form == "fresh":
            return first_blocks.converted_model(self.supernets[space.name], config)
        from mcuformer_tf.compiler.int4_weights import pack_int4_model
        from mcuformer_tf.nas.data import load_digits
        from mcuformer_tf.nas.extract import extract_subnet
        from mcuformer_tf.quantize.export import calibrated_int8_tflite

        model = calibrated_int8_tflite(extract_subnet(self.supernets[space.name], config), load_digits(32), count=16,
                                       weight_bits=config.weight_bits)
        return pack_int4_model(model) if config.weight_bits == 4 else model

    def of(self, space: SearchSpace, config: SubnetConfig, kernels: bool, form: str = "fresh") -> dict:
        key = f"{form}:{config.to_json()}"
        entry = self.saved.get(key, {})
        if "firmware" in entry and (entry.get("kernels") or not kernels):
            return entry
        began = time.perf_counter()
        model = self._model(space, config, form)
        if kernels:
            image = np.random.default_rng(1).integers(-128, 128, (1, config.image_size, config.image_size, 3),
                                                      np.int8)
            cases = kernel_test.model_cases(model, image, prefix="fit", inner_loops=False)
            result = kernel_test.run(cases, self.work / "kernels", targets.EMULATOR)
            wrong = [r.name for c, r in zip(cases, result.cases) if r.output != c.expected.tobytes()]
            if wrong:
                raise McuformerError(f"{config.describe()}: the Cortex-M7 differs from the host on {wrong}")
            entry["kernels"] = {r.name.split(".")[1]: r.instructions for r in result.cases}
        entry["firmware"] = self._firmware(compile_model(model).model_bytes, config)
        self.saved[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.saved, indent=1))
        print(f"   measured {config.describe()} ({form}): {entry['firmware']:,} instructions "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
        return entry

    def _firmware(self, fused: bytes, config: SubnetConfig) -> int:
        """One whole inference of the fused model as firmware; one project folder for all, so that
        make compiles the MCUF sources once."""
        folder = self.work / "firmware"
        path = self.work / "fused.tflite"
        path.write_bytes(fused)
        plan = deploy.plan(path, targets.EMULATOR, EMULATOR_ARENA)
        example = np.random.default_rng(1).integers(-128, 128, plan.input.shape, np.int8)
        deploy.write(plan, path, folder, example)
        return deploy.build_and_run(folder, plan.output.nbytes, 1800).instructions


def fit(measured: list) -> dict:
    """kind -> feature -> instructions per trip, by non-negative least squares on (config, form, counts)."""
    rows = {kind: ([], []) for kind in latency.KINDS}
    for config, form, entry in measured:
        shape = latency.net_shape(config)
        for name, count in entry["kernels"].items():
            kind = name.rstrip("0123456789")
            block = int(name[len(kind):])
            rows[kind][0].append(latency.kernel_features(kind, shape, block, export_form(form, config)))
            rows[kind][1].append(count)
        tail = entry["firmware"] - sum(entry["kernels"].values())
        rows["tail"][0].append(latency.features(shape, export_form(form, config))["tail"])
        rows["tail"][1].append(tail)
    coefficients = {}
    for kind, (features, counts) in rows.items():
        names = latency.FEATURES[kind]
        matrix = np.array([[f[name] for name in names] for f in features], float)
        scale = np.maximum(matrix.max(axis=0), 1.0)  # columns of like size, for the solver
        solution, _ = nnls(matrix / scale, np.array(counts, float), maxiter=50 * len(names))
        coefficients[kind] = {name: float(value) for name, value in zip(names, solution / scale)}
    return coefficients


def write_fit(coefficients: dict, error: str) -> None:
    lines = ['"""Fitted by tools/fit_latency_model.py: instructions per loop trip of the latency model',
             '(board/latency.py), and the error it measured."""', "COEFFICIENTS = {"]
    for kind, table in coefficients.items():
        lines.append(f"    {kind!r}: {{")
        lines += [f"        {name!r}: {value:.6g}," for name, value in table.items()]
        lines.append("    },")
    pieces = textwrap.wrap(error, 100, drop_whitespace=False)  # lines within the lint's 120
    lines += ["}", "ERROR = (", *[f"    {piece!r}" for piece in pieces], ")", ""]
    FIT_MODULE.write_text("\n".join(lines))


def check(label: str, counts: Counts, space: SearchSpace, configs: list, form: str = "fresh") -> float:
    """Prints the model against the firmware for each config; returns the worst relative error."""
    print(f"{label}: model against one whole inference as firmware")
    worst = 0.0
    for config in configs:
        measured = counts.of(space, config, kernels=False, form=form)["firmware"]
        estimate = latency.instructions(config, FORMS[form])  # at the config's weight_bits
        error = estimate / measured - 1
        worst = max(worst, abs(error))
        print(f"   {config.describe():<58}{measured:>14,}{estimate:>14,}{error:>+9.2%}")
    print(f"   worst error {worst:.2%} over {len(configs)} subnets")
    return worst


def speed(space: SearchSpace) -> float:
    configs = space.sample_many(5000, seed=3)
    latency.clear_caches()
    began = time.perf_counter()
    for config in configs:
        latency.instructions(config)
    return len(configs) / (time.perf_counter() - began)


def fit_and_check() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true",
                        help="also check 10 random deit-tiny-mcu first blocks and 4 with INT4 weights")
    parser.add_argument("--no-fit", action="store_true", help="check the fitted model only")
    parser.add_argument("--counts", type=Path, default=Path("runs/latency_counts.json"),
                        help="measured counts, kept between runs")
    args = parser.parse_args()
    reason = deploy.m7_library_missing()
    if reason:
        print(f"fit_latency_model: {reason}", file=sys.stderr)
        return 2
    digits, deit = SearchSpace.load("digits"), SearchSpace.load(first_blocks.SPACE)
    with tempfile.TemporaryDirectory() as work:
        counts = Counts(args.counts, Path(work))
        if not args.no_fit:
            fit_set = [(digits, c, "fresh") for c in [*digits.sample_many(FIT_DIGITS, FIT_SEED), digits.largest(),
                                                      digits.smallest()]]
            fit_set += [(deit, c, "fresh") for c in first_blocks.FIRST_BLOCKS.values()]
            fit_set += [(digits, c, "qat") for c in digits.sample_many(FIT_QAT, QAT_FIT_SEED)]
            fit_set += [(digits, c, "qat") for c in int4([*digits.sample_many(FIT_INT4, INT4_FIT_SEED),
                                                           digits.largest(), digits.smallest()])]
            fit_set += [(deit, c, "qat") for c in int4(first_blocks.FIRST_BLOCKS.values())]
            print(f"fitting on {len(fit_set)} subnets (kernel test + whole inference)")
            measured = [(config, form, counts.of(space, config, kernels=True, form=form))
                        for space, config, form in fit_set]
            latency.latency_fit.COEFFICIENTS = fit(measured)
            latency.clear_caches()
            write_fit(latency.latency_fit.COEFFICIENTS, "not checked")
        errors = {"digits": check(f"{CHECK_DIGITS} random digits subnets", counts, digits,
                                  digits.sample_many(CHECK_DIGITS, CHECK_SEED)),
                  "digits QAT": check(f"{CHECK_QAT} random digits subnets in export's QAT form", counts, digits,
                                      digits.sample_many(CHECK_QAT, QAT_CHECK_SEED), "qat"),
                  "digits INT4": check(f"{CHECK_INT4} random digits subnets with INT4 weights (QAT form)", counts,
                                       digits, int4(digits.sample_many(CHECK_INT4, INT4_CHECK_SEED)), "qat")}
        if args.paper:
            errors["deit-tiny-mcu first blocks"] = check(
                f"{CHECK_DEIT} random deit-tiny-mcu first blocks", counts, deit,
                random_first_blocks(deit, CHECK_DEIT, CHECK_SEED))
            errors["deit-tiny-mcu first blocks INT4"] = check(
                f"{CHECK_DEIT_INT4} random deit-tiny-mcu first blocks with INT4 weights (QAT form)", counts, deit,
                int4(random_first_blocks(deit, CHECK_DEIT_INT4, DEIT_INT4_CHECK_SEED)), "qat")
    for width in ("int8", "INT4"):
        worst = max(error for name, error in errors.items() if ("INT4" in name) == (width == "INT4"))
        print(f"worst error, {width} weights: {worst:.2%}")
    said = "; ".join(f"{name} {error:.1%}" for name, error in errors.items())
    if not args.no_fit:
        write_fit(latency.latency_fit.COEFFICIENTS, f"worst error against firmware: {said}")
    print(f"latency model: {speed(digits):,.0f} digits configs/s, {speed(deit):,.0f} deit-tiny-mcu configs/s")
    return 0


def main() -> int:
    """fit_and_check, a McuformerError said in one line."""
    try:
        return fit_and_check()
    except McuformerError as error:
        print(f"fit_latency_model: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
