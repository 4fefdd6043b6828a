"""Instruction counts of the MCUF kernels on the emulated Cortex-M7 (qemu mps2-an500, -icount shift=0).

Prints, from one run of the kernel test firmware built twice (DSP loops, portable C loops):

1. MACs per instruction of the linear inner loop (the int8 dot product): two FULLY_CONNECTED layers of
   64 outputs differing only in depth (256, 512), the same with packed INT4 weights, and two q·kᵀ rows
   differing only in depth (64, 128), so that the difference isolates the loop from the per-output
   requantisation;
2. per MCUF kernel of the demo's largest digits subnet (fresh weights; the instruction counts do not
   depend on the weights' values): instructions, the MACs the unfused graph does for the same result,
   MACs per instruction, and the portable/DSP instruction ratio;
3. instructions of the fused kernels of one inference; with TFLM_ROOT and TFLM_M7_LIB (a Cortex-M7
   TFLM library, see README "Put it on a board"), also one whole inference of the fused model and
   of the unfused one (stock TFLM's kernels: reference, or CMSIS-NN if the library was built with
   them) as deployed firmware, and their ratio;
4. at paper scale (with --paper): the first block of four deit-tiny-mcu subnets (fresh weights, one
   block: patch embedding, attention, MLP), per kernel instructions, MACs and MAC/instr, and the
   attention + MLP pair's and the whole block's, with int8 weights and with the same block's filters
   requantised onto the 4-bit grid and packed INT4 (int4_weights.onto_int4_grid), and the INT4 / int8
   MAC/instr ratio; with TFLM_ROOT and TFLM_M7_LIB, also each first block (+ head) fused and unfused
   as deployed firmware;
5. (with --paper, TFLM_ROOT and TFLM_M7_LIB) one whole inference of the smallest deit-tiny-mcu subnet
   at patch 16 (224/16 e168 h3 mlp3.5 r0.4, 12 blocks; fresh weights), fused and unfused as deployed
   firmware, and their ratio. --subnet-form export (default): the form `export` writes, QAT
   per-tensor kernels, no fine-tune epoch; float: the converter's form of the float model. The
   unfused models do not fit 320 KiB: firmware is linked for the emulator-only profile (the disco
   board's layout, qemu's 4 MiB of RAM; the instruction counts do not depend on the RAM's size), and
   the fused subnet also for the disco board itself, which proves that it fits (or prints why not).

Times are estimates at the STM32F746's 216 MHz from the instruction counts (one instruction a cycle).
--tflm-lib picks the TFLM library of the run (default: TFLM_M7_LIB), so that one command gives the
ratios against CMSIS-NN's kernels and against the reference ones; --no-firmware leaves out every
whole inference as firmware (the kernels' figures alone: minutes instead of most of an hour).

    python tools/bench_cortex_m7.py [--paper [--subnet-form export|float]] [--tflm-lib LIBRARY]
                                    [--no-firmware]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from mcuformer_tf.board import cortex_m7, deploy, kernel_test, targets  # noqa: E402
from mcuformer_tf.compiler import kernel_params  # noqa: E402
from mcuformer_tf.compiler.int4_weights import onto_int4_grid, pack_int4_model  # noqa: E402
from mcuformer_tf.compiler.pipeline import compile_model  # noqa: E402
from mcuformer_tf.errors import McuformerError  # noqa: E402

OUTPUTS = 64
LINEAR_DEPTHS = (256, 512)
SCORE_DEPTHS = (64, 128)
SCORE_COLUMNS = 64


def loop_cases(rng) -> list:
    cases = []
    for bits, name in ((8, "linear"), (4, "int4")):
        for depth in LINEAR_DEPTHS:
            cases.append(kernel_test.synthetic_linear_case(f"loop.{name}{depth}", depth, OUTPUTS, 3, 0, rng,
                                                           weight_bits=bits))
    scores = kernel_params.BatchMatmulParams(lhs_offset=5, rhs_offset=-1, output_offset=0, multiplier=1 << 30,
                                            shift=-9, rhs_transposed=1)
    for depth in SCORE_DEPTHS:
        cases.append(kernel_test._matmul_case(f"loop.scores{depth}", scores, depth, SCORE_COLUMNS, rng))
    return cases


def demo_model() -> bytes:
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.nas.supernet import Supernet
    from mcuformer_tf.quantize.convert import to_int8_tflite

    space = SearchSpace.load("digits")
    supernet = Supernet(space)
    supernet(np.zeros((1, 32, 32, 3), np.float32))
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    return to_int8_tflite(extract_subnet(supernet, space.largest()), images)


EMULATOR_ARENA = 3 << 20  # bytes, on the emulator-only profile: room for any model here; counts do not depend on it
BOARD = targets.target("stm32f746-disco")
SUBNET_PATCH = 16  # issue 14's subnet (615 M MACs); space.smallest() has the fewest tokens: patch 32
FIRMWARE_SECONDS = 1800  # qemu's time for one inference: the unfused deit subnet over reference kernels takes minutes
FORMS = {"export": "export's QAT form (per-tensor linear kernels), no fine-tune epoch",
         "float": "the converter's form of the float model (per-channel linear kernels)"}


def firmware_runs(runs: dict, folder: Path) -> dict:
    """name -> deploy.FirmwareRun of one inference of a model as deployed firmware, for runs given as
    name -> (model bytes, target name); on the emulator-only profile with an arena of EMULATOR_ARENA
    bytes, on a board with the smallest the host runner's TFLM runs it with. Same example input
    (seed 1) for every run."""
    results = {}
    for name, (model, target_name) in runs.items():
        path = folder / f"{name}.tflite"
        path.write_bytes(model)
        plan = deploy.plan(path, target_name, EMULATOR_ARENA if target_name == targets.EMULATOR else None)
        example = np.random.default_rng(1).integers(-128, 128, plan.input.shape, np.int8)
        deploy.write(plan, path, folder / name, example)
        results[name] = deploy.build_and_run(folder / name, plan.output.nbytes, FIRMWARE_SECONDS)
    return results


def fused_and_unfused(model: bytes, target_name: str) -> dict:
    """firmware_runs of an unfused model and of its compiled (fused) form on one target."""
    with tempfile.TemporaryDirectory() as folder:
        return firmware_runs({"unfused": (model, target_name), "fused": (compile_model(model).model_bytes,
                                                                          target_name)}, Path(folder))


def library_kernels() -> str:
    """Which kernels TFLM_M7_LIB holds for the builtins: CMSIS-NN's or TFLM's reference ones."""
    members = subprocess.run(["arm-none-eabi-ar", "t", os.environ["TFLM_M7_LIB"]], capture_output=True,
                             text=True, check=True).stdout.split()
    return "CMSIS-NN" if "arm_fully_connected_s8.o" in members else "reference"


def fused_against_unfused(label: str, runs: dict) -> str:
    """One line: the unfused and fused firmware's instructions, their ratio, the times, and whether
    their output bytes agree (the fused kernels give stock TFLM's reference kernels' bytes; CMSIS-NN's
    kernels for some builtins need not)."""
    fused, unfused = runs["fused"], runs["unfused"]
    return (f"   {label:<37}unfused {unfused.instructions:>14,}  fused {fused.instructions:>14,}  "
            f"fused/unfused {fused.instructions / unfused.instructions:.3f}  "
            f"({BOARD.milliseconds(unfused.instructions):,.1f} -> {BOARD.time_estimate(fused.instructions)}); "
            f"output bytes {'equal' if fused.output == unfused.output else 'differ'}")


def block_kernels(label: str, model: bytes, image: int) -> None:
    """Section 4's lines of one first block, int8 weights and packed INT4: per kernel (and for the
    attention + MLP pair and the whole block) instructions, MACs, MAC/instr (DSP loops), and the INT4 /
    int8 MAC/instr ratio."""
    pixels = np.random.default_rng(1).integers(-128, 128, (1, image, image, 3), np.int8)
    widths = {"int8": model, "INT4": pack_int4_model(onto_int4_grid(model))}
    cases, counts = [], {}
    for width, data in widths.items():  # one firmware each: both blocks' weights exceed the flash
        mine = kernel_test.model_cases(data, pixels, prefix=width, inner_loops=False)
        with tempfile.TemporaryDirectory() as build:
            result = kernel_test.run(mine, Path(build), dsp=True)
        wrong = [r.name for c, r in zip(mine, result.cases) if r.output != c.expected.tobytes()]
        if wrong or result.exit_code:
            print(f"   {label}: the Cortex-M7 differs from the host build on {wrong}")
            return
        cases += mine
        counts.update({r.name: r.instructions for r in result.cases})
    rates = {}
    for width in widths:
        mine = [c for c in cases if c.name.startswith(width + ".")]
        groups = [(c.name.split(".")[1], [c]) for c in mine] + [
            ("attn+MLP", [c for c in mine if c.kind in ("attention", "mlp")]), ("block", mine)]
        for kind, group in groups:
            instructions, macs = sum(counts[c.name] for c in group), sum(c.macs for c in group)
            rates[width, kind] = macs / instructions
            print(f"   {label:<30}{width:<6}{kind:<14}{instructions:>14,}{macs:>13,}{rates[width, kind]:>11.3f}")
    print(f"   {label:<30}INT4 / int8 MAC/instr: " + ", ".join(
        f"{kind} {rates['INT4', kind] / rates['int8', kind]:.3f}" for _, kind in
        [k for k in rates if k[0] == "int8"]))


def smallest_subnet(space, supernet, form: str) -> None:
    """Section 5: one whole inference of the space's smallest subnet at patch SUBNET_PATCH, fused and
    unfused, as firmware; the fused one on the board too, or the line saying why it does not fit."""
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize.export import calibrated_int8_tflite
    from mcuformer_tf.quantize.first_blocks import converted_model

    config = dataclasses.replace(space.smallest(), patch_size=SUBNET_PATCH)
    label = (f"{config.image_size}/{config.patch_size} e{config.embed_dim} h{config.num_heads[0]} "
             f"mlp{config.mlp_ratio[0]:g} r{config.rank_ratio:g} {config.depth} blocks")
    model = calibrated_int8_tflite(extract_subnet(supernet, config), load_digits(32), count=16) \
        if form == "export" else converted_model(supernet, config)
    fused = compile_model(model).model_bytes
    with tempfile.TemporaryDirectory() as folder:
        runs = firmware_runs({"unfused": (model, targets.EMULATOR), "fused": (fused, targets.EMULATOR)}, Path(folder))
        print(f"5. one whole inference of the smallest {space.name} subnet at patch {SUBNET_PATCH} as firmware "
              "(fresh weights, "
              f"{FORMS[form]}; {library_kernels()} kernels for the builtins; {targets.EMULATOR}):")
        print(fused_against_unfused(label, runs))
        try:
            board = firmware_runs({"board": (fused, BOARD.name)}, Path(folder))["board"]
        except McuformerError as error:
            print(f"   fused, for {BOARD.name}: {error}")
            return
    print(f"   fused, linked for {BOARD.name}: " + ", ".join(f"{region} {used:,} B" for region, used in
                                                            board.usage.items()) +
          f"; {board.instructions:,} instructions, output bytes "
          f"{'equal to' if board.output == runs['fused'].output else 'DIFFERENT from'} the emulator profile's")


def paper_section(form: str, firmware: bool) -> None:
    """Sections 4 and 5: the first blocks at paper scale, kernels and (given TFLM) firmware; the
    smallest deit-tiny-mcu subnet whole."""
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.quantize import first_blocks

    space = SearchSpace.load(first_blocks.SPACE)
    supernet = first_blocks.fresh_supernet(space)
    print(f"4. first blocks at paper scale ({space.name}, fresh weights, DSP loops):")
    print(f"   {'block':<30}{'width':<6}{'kernel':<14}{'instructions':>14}{'MACs':>13}{'MAC/instr':>11}")
    blocks = {}
    for label, config in first_blocks.FIRST_BLOCKS.items():
        blocks[label] = first_blocks.converted_model(supernet, config)
        block_kernels(label, blocks[label], config.image_size)
    if not firmware:
        return
    reason = deploy.m7_library_missing()
    if reason:
        print(f"   the first blocks and the smallest subnet as firmware: skipped: {reason}")
        return
    print(f"   one inference of the first block + head as firmware ({library_kernels()} kernels for the "
          f"builtins; {targets.EMULATOR}):")
    for label, model in blocks.items():
        print(fused_against_unfused(label, fused_and_unfused(model, targets.EMULATOR)))
    smallest_subnet(space, supernet, form)


def arguments():
    parser = argparse.ArgumentParser(description="Instruction counts of the MCUF kernels on the emulated Cortex-M7.")
    parser.add_argument("--paper", action="store_true", help="the paper-scale sections (4, 5)")
    parser.add_argument("--subnet-form", choices=FORMS, default="export", help="the smallest subnet's int8 "
                        "form: " + "; ".join(f"{name}: {about}" for name, about in FORMS.items()))
    parser.add_argument("--tflm-lib", type=Path, help="the Cortex-M7 TFLM library of the firmware "
                        "(default: TFLM_M7_LIB)")
    parser.add_argument("--no-firmware", dest="firmware", action="store_false",
                        help="leave out the whole inferences as firmware: the kernels' figures only")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    if args.tflm_lib is not None:
        if not args.tflm_lib.is_file():
            print(f"--tflm-lib {args.tflm_lib}: no such file", file=sys.stderr)
            return 2
        os.environ["TFLM_M7_LIB"] = str(args.tflm_lib.resolve())
    reason = cortex_m7.toolchain_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0
    if args.paper:
        paper_section(args.subnet_form, args.firmware)
        return 0
    rng = np.random.default_rng(0)
    model = demo_model()
    image = np.random.default_rng(1).integers(-128, 128, (1, 32, 32, 3), np.int8)
    loops = loop_cases(rng)
    kernels = kernel_test.model_cases(model, image, prefix="largest", inner_loops=False)
    cases = loops + kernels
    with tempfile.TemporaryDirectory() as build:
        runs = {dsp: kernel_test.run(cases, Path(build), dsp=dsp) for dsp in (True, False)}
    for dsp, result in runs.items():
        wrong = [r.name for c, r in zip(cases, result.cases) if r.output != c.expected.tobytes()]
        if wrong or result.exit_code:
            print(f"the Cortex-M7 differs from the host build on {wrong}")
            return 1
    counts = {dsp: {r.name: r.instructions for r in result.cases} for dsp, result in runs.items()}
    macs = {case.name: case.macs for case in cases}

    print("1. linear inner loop, MACs per instruction (difference of two depths):")
    for label, names in (("FULLY_CONNECTED row (qkv, proj, fc1, fc2)", [f"loop.linear{d}" for d in LINEAR_DEPTHS]),
                         ("the same, packed INT4 weights", [f"loop.int4{d}" for d in LINEAR_DEPTHS]),
                         ("q·kᵀ row (attention scores)", [f"loop.scores{d}" for d in SCORE_DEPTHS])):
        figures = []
        for dsp in (True, False):
            d_macs = macs[names[1]] - macs[names[0]]
            d_instructions = counts[dsp][names[1]] - counts[dsp][names[0]]
            figures.append(f"{'DSP' if dsp else 'portable'} {d_macs / d_instructions:.3f}")
        print(f"   {label:<44}{', '.join(figures)}")

    print("2. MCUF kernels of the largest digits subnet (-icount shift=0):")
    print(f"   {'kernel':<24}{'instructions':>13}{'MACs':>11}{'MAC/instr':>11}{'portable/DSP':>14}")
    for case in kernels:
        dsp, portable = counts[True][case.name], counts[False][case.name]
        print(f"   {case.name:<24}{dsp:>13,}{case.macs:>11,}{case.macs / dsp:>11.3f}{portable / dsp:>14.2f}")
    total = {dsp: sum(counts[dsp][case.name] for case in kernels) for dsp in (True, False)}
    print(f"3. fused kernels of one inference: {total[True]:,} instructions with the DSP loops, "
          f"{total[False]:,} portable ({total[False] / total[True]:.2f}x); "
          f"{sum(c.macs for c in kernels) / total[True]:.3f} MAC/instr")
    reason = deploy.m7_library_missing() or (None if args.firmware else "--no-firmware")
    if reason:
        print(f"   whole inferences as firmware: skipped: {reason}")
        return 0
    print(f"   one whole inference as firmware ({library_kernels()} kernels for the builtins; stm32f746):")
    print(fused_against_unfused("largest digits subnet", fused_and_unfused(model, "stm32f746")))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except McuformerError as error:
        print(f"bench_cortex_m7: {error}", file=sys.stderr)
        sys.exit(1)
