"""The stock TFLM arena of one transformer block at paper scale, batch 1, int8.

For each paper-scale config (MCUFormer's DeiT-Tiny-like block: embed 192,
3 heads, MLP ratio 4; image/patch 224/16, 240/24 and 160/16) one block alone
(tokens in, tokens out, dense linears: rank ratio 1) is converted to int8
with random calibration tokens, and the smallest arena with which the stock
TFLM wheel allocates and invokes it is searched (`mcuformer-tf arena`).
Prints the arena with its persistent / non-persistent split and the largest
tensors the block holds at once.

    python tools/bench_block_arena.py [--rank-ratio 1.0]
"""
import argparse

import numpy as np

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.memory.arena_search import find_arena
from mcuformer_tf.nas.extract import block_model
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.quantize.convert import to_int8_tflite

PAPER_SCALE = ((224, 16), (240, 24), (160, 16))
KIB = 1024


def paper_block(image_size, patch_size, rank_ratio):
    return SubnetConfig(image_size=image_size, patch_size=patch_size, rank_ratio=rank_ratio,
                        embed_dim=192, depth=1, num_heads=(3,), mlp_ratio=(4.0,),
                        num_classes=1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank-ratio", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'image/patch':>11} {'tokens':>6} {'arena KiB':>10} {'non-persistent':>15} "
          f"{'persistent':>11} {'fails at':>9}")
    for image_size, patch_size in PAPER_SCALE:
        config = paper_block(image_size, patch_size, args.rank_ratio)
        model = block_model(config)
        tokens = rng.normal(0, 1, (16, config.num_tokens, config.embed_dim)).astype(np.float32)
        arena = find_arena(to_int8_tflite(model, tokens))
        print(f"{image_size:>7}/{patch_size:<3} {config.num_tokens:>6} {arena.arena / KIB:>10.1f} "
              f"{arena.non_persistent:>15,} {arena.persistent:>11,} {arena.failing:>9,}")


if __name__ == "__main__":
    main()
