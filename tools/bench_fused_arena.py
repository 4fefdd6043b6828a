"""Unfused vs fused arena, from one run, for paper-scale ViTs and the demo subnet.

For each config (MCUFormer's paper scale: embed 192, 3 heads, MLP ratio 4,
dense linears, image/patch 224/16, 240/24, 160/16, one block, 1000 classes;
and the demo's largest digits subnet) the int8 model is converted with
random calibration images (fresh weights) and `mcuformer-tf compile`'s passes
fuse it and plan its arena. Then, and the header line says which:

- with TFLM_ROOT (the host runner over the user's TFLM, our glue registered):
  both models are measured there, each the smallest arena with which TFLM
  allocates and invokes it (persistent + non-persistent, one TFLM for both);
- without it (no TFLM can run the MCUF ops): the non-persistent arenas, the
  unfused one measured in the stock TFLM wheel (the head of its smallest
  working arena), the fused one the compiler's offline plan, which the arena
  executor runs.

Prints both, their ratio, and the memory model's figure for the fused column
(`memory.estimate.memory_of(config, FRESH_FLOAT)`: arena, or its
non-persistent part).

    python tools/bench_fused_arena.py
"""
import tempfile
from pathlib import Path

import numpy as np

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.memory.arena_search import find_arena
from mcuformer_tf.memory.estimate import memory_of
from mcuformer_tf.memory.form import FRESH_FLOAT
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from mcuformer_tf.nas.supernet import Supernet
from mcuformer_tf.quantize.convert import to_int8_tflite
from mcuformer_tf.tflm.host_runner import find_host_arena, host_runner_skip_reason

KIB = 1024
PAPER_SCALE = ((224, 16), (240, 24), (160, 16))


def paper_config(image_size, patch_size):
    return SubnetConfig(image_size=image_size, patch_size=patch_size, rank_ratio=1.0,
                        embed_dim=192, depth=1, num_heads=(3,), mlp_ratio=(4.0,),
                        num_classes=1000)


def int8_model(space, config, rng):
    supernet = Supernet(space)
    size = max(space.image_size)
    supernet(np.zeros((1, size, size, 3), np.float32))
    images = rng.uniform(0, 1, (8, config.image_size, config.image_size, 3)).astype(np.float32)
    return to_int8_tflite(extract_subnet(supernet, config), images)


def host_runner_arenas(unfused: Path, fused: Path, config) -> tuple:
    return (find_host_arena(unfused)[0], find_host_arena(fused)[0],
            memory_of(config, FRESH_FLOAT).fused.arena)


def plan_arenas(unfused: Path, fused_plan: int, config) -> tuple:
    return (find_arena(unfused).non_persistent, fused_plan,
            memory_of(config, FRESH_FLOAT).fused.non_persistent)


def main():
    rng = np.random.default_rng(0)
    deit = SearchSpace.load("deit-tiny-mcu")
    digits = SearchSpace.load("digits")
    cases = [(f"paper {i}/{p}", deit, paper_config(i, p)) for i, p in PAPER_SCALE]
    cases.append(("demo (digits largest)", digits, digits.largest()))
    skip = host_runner_skip_reason()
    if skip is None:
        print("whole arenas (persistent + non-persistent): both models in the host runner "
              "(TFLM_ROOT, our glue), the smallest arena that allocates and invokes each")
    else:
        print("non-persistent arenas: unfused in the stock TFLM wheel (head of its smallest "
              "working arena), fused the compiler's offline plan that the arena executor runs "
              f"(no host runner: {skip})")
    print(f"{'model':<22} {'unfused KiB':>12} {'fused KiB':>10} {'fused/unfused':>14} "
          f"{'memory model KiB':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, space, config) in enumerate(cases):
            unfused = Path(tmp) / f"model{index}.tflite"
            unfused.write_bytes(int8_model(space, config, rng))
            compiled = compile_model(unfused.read_bytes())
            fused = unfused.with_suffix(".fused.tflite")
            fused.write_bytes(compiled.model_bytes)
            if skip is None:
                before, after, modelled = host_runner_arenas(unfused, fused, config)
            else:
                before, after, modelled = plan_arenas(unfused, compiled.plan.size, config)
            print(f"{name:<22} {before / KIB:>12.1f} {after / KIB:>10.1f} "
                  f"{after / before:>14.2f} {modelled / KIB:>17.1f}")


if __name__ == "__main__":
    main()
