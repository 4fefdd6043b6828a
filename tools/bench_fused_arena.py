"""Unfused vs fused non-persistent arena, from one run, for paper-scale ViTs and the demo subnet.

For each config (MCUFormer's paper scale: embed 192, 3 heads, MLP ratio 4,
dense linears, image/patch 224/16, 240/24, 160/16, one block, 1000 classes;
and the demo's largest digits subnet) the int8 model is converted with
random calibration images, its non-persistent arena in stock TFLM is
measured (the wheel, smallest arena that runs), then `mcuformer-tf compile`'s
passes fuse and plan it and the fused non-persistent arena is read from the
offline plan the arena executor runs (TFLM has no MCUF kernels without the
user's TFLM tree, so the column says "plan"). Prints both and their ratio.

    python tools/bench_fused_arena.py
"""
import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np

from mcuformer_tf.arena_search import find_arena
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.convert import to_int8_tflite
from mcuformer_tf.extract import extract_subnet
from mcuformer_tf.search_space import SearchSpace, SubnetConfig
from mcuformer_tf.supernet import Supernet

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


def main():
    rng = np.random.default_rng(0)
    deit = SearchSpace.load("deit-tiny-mcu")
    digits = SearchSpace.load("digits")
    cases = [(f"paper {i}/{p}", deit, paper_config(i, p)) for i, p in PAPER_SCALE]
    cases.append(("demo (digits largest)", digits, digits.largest()))
    print(f"{'model':<22} {'unfused KiB (TFLM)':>19} {'fused KiB (plan)':>17} {'fused/unfused':>14}")
    for name, space, config in cases:
        model = int8_model(space, config, rng)
        unfused = find_arena(model).non_persistent
        fused = compile_model(model).plan.size
        print(f"{name:<22} {unfused / KIB:>19.1f} {fused / KIB:>17.1f} {fused / unfused:>14.2f}")


if __name__ == "__main__":
    main()
