"""Does the input pipeline keep up with training? Decode + augment against the train step, at 224.

Writes a folder of JPEGs (ImageNet layout, sides drawn from 224-500 px, smooth random content,
quality 90) and times:
- decode + augment: `ImageData.train_batches` of that folder under the recipe (random-resized
  crop to 224, flip, then the recipe's RandAugment, random erasing, mixup/cutmix), first with
  tf.data held to one thread (images/s per core), then with all cores (AUTOTUNE);
- the train step: the sandwich step of `mcuformer-tf train` on the space at 224 (largest +
  smallest subnet, `--random-subnets 0`) on batches of random images, images/s on all cores.
Training is input-bound where the train step's images/s exceeds what the cores left over from
training can decode; the README quotes this machine's figures.

    python tools/bench_input_pipeline.py [--images 96] [--recipe deit] [--space deit-tiny-mcu]
"""
import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.nas.data import load_imagefolder
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.nas.train_settings import recipe_settings
from mcuformer_tf.nas.training import SandwichTrainer

SIZE = 224


def write_jpegs(root: Path, count: int, classes: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, number in (("train", count), ("val", classes)):
        for index in range(number):
            folder = root / split / f"class{index % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            height, width = rng.integers(224, 501, size=2)
            coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((int(width), int(height)), Image.BILINEAR)
            image.save(folder / f"{index}.jpg", quality=90)


def images_per_second(batches, batch_size: int, count: int) -> float:
    iterator = iter(batches)
    next(iterator)  # warm up: trace the map functions
    began, seen = time.perf_counter(), 0
    while seen < count:
        next(iterator)
        seen += batch_size
    return seen / (time.perf_counter() - began)


def one_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def train_step_images_per_second(space, settings, steps: int) -> float:
    trainer = SandwichTrainer(space, settings, steps_per_epoch=steps + 1,
                              strategy=tf.distribute.get_strategy())
    images = tf.random.uniform([settings.batch_size, SIZE, SIZE, 3])
    soft = tf.one_hot(tf.range(settings.batch_size) % space.num_classes, space.num_classes)
    rng = random.Random(0)
    float(trainer.train_step(images, soft, trainer.subnets_for_step(rng)))  # trace
    began = time.perf_counter()
    for _ in range(steps):
        float(trainer.train_step(images, soft, trainer.subnets_for_step(rng)))
    return steps * settings.batch_size / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="JPEGs to write and time")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--recipe", default="deit")
    parser.add_argument("--space", default="deit-tiny-mcu")
    parser.add_argument("--train-steps", type=int, default=2, help="timed train steps (0: skip)")
    args = parser.parse_args()

    settings = recipe_settings(args.recipe, args.batch_size, random_subnets=0)
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(Path(folder), args.images)
        data = load_imagefolder(folder, SIZE)
        batches = data.train_batches(args.batch_size, seed=0, recipe=settings).repeat()
        per_core = images_per_second(one_thread(batches), args.batch_size, args.images)
        all_cores = images_per_second(batches, args.batch_size, args.images)
    print(f"decode + augment ({args.recipe} recipe, {SIZE} px, JPEGs of 224-500 px): "
          f"{per_core:.1f} images/s per core, {all_cores:.1f} images/s on all cores")
    if args.train_steps:
        space = SearchSpace.load(args.space)
        step = train_step_images_per_second(space, settings, args.train_steps)
        print(f"train step ({space.name} at {SIZE}, largest + smallest subnet, batch "
              f"{args.batch_size}): {step:.2f} images/s on all cores")
        print(f"one core decodes for {per_core / step:.0f}x the training rate: "
              f"{'input' if step > per_core else 'compute'}-bound")


if __name__ == "__main__":
    main()
