"""Configs per second of the memory model (`mcuformer_tf.memory.estimate.memory_of`).

For each preset, N random configs (fresh ones: the per-block caches start cold, as in a
tuner's first generation), then the same N again (caches warm); prints both rates and the
whole-graph planners' rate for comparison (what the cached paths replace).

    python tools/bench_memory_model.py [--configs 5000]
"""
import argparse
import random
import time

from mcuformer_tf.memory.estimate import memory_of
from mcuformer_tf.memory.fused_plan import fused_non_persistent_exact
from mcuformer_tf.memory.unfused_plan import unfused_non_persistent_exact
from mcuformer_tf.nas.search_space import PRESETS, SearchSpace


def rate(function, configs) -> float:
    start = time.perf_counter()
    for config in configs:
        function(config)
    return len(configs) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=5000)
    args = parser.parse_args()
    for preset in PRESETS:
        space, rng = SearchSpace.load(preset), random.Random(0)
        configs = [space.sample(rng) for _ in range(args.configs)]
        cold = rate(memory_of, configs)
        warm = rate(memory_of, configs)
        whole = rate(lambda c: (unfused_non_persistent_exact(c), fused_non_persistent_exact(c)),
                     configs[:50])
        print(f"{preset:>14}: memory_of {cold:>8,.0f} configs/s cold, {warm:>8,.0f} warm; "
              f"whole-graph plans {whole:>6,.0f} configs/s ({warm / whole:.0f}x slower than warm)")


if __name__ == "__main__":
    main()
