"""Supernet training throughput against training the largest subnet alone, from one run.

Times training steps on the same batches of the digits data:
- supernet: the sandwich step of `mcuformer-tf train` (largest + smallest +
  random subnets, in-place distillation, one AdamW update);
- largest alone: the extracted largest subnet (a plain tf_keras model) with a
  plain cross-entropy AdamW step, traced the same way.
Prints images/s for each and two ratios: per image (a sandwich step trains
several subnets on each image) and per subnet-image (one image through one
subnet, forward, backward and update: the unit of work both loops share).
Wall-clock figures vary by machine; the ratios are what to compare.

    python tools/bench_supernet_throughput.py [--space digits] [--steps 40]
"""
import argparse
import random
import time

import tensorflow as tf
import tf_keras as keras

import mcuformer_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from mcuformer_tf.nas.data import load_digits
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.nas.training import SandwichTrainer, TrainSettings


def plain_train_step(model):
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.05, global_clipnorm=1.0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def time_steps(step, batches, warmup):
    for images, labels in batches[:warmup]:
        float(step(images, labels))
    began = time.perf_counter()
    for images, labels in batches[warmup:]:
        float(step(images, labels))
    return (time.perf_counter() - began) / (len(batches) - warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="digits")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--random-subnets", type=int, default=1)
    args = parser.parse_args()

    space = SearchSpace.load(args.space)
    data = load_digits(max(space.image_size))
    batches = list(data.train_batches(args.batch_size, seed=0).repeat()
                   .take(args.steps + args.warmup))
    settings = TrainSettings(epochs=1, batch_size=args.batch_size,
                             random_subnets=args.random_subnets)
    trainer = SandwichTrainer(space, settings, len(batches), tf.distribute.get_strategy())
    rng = random.Random(0)
    supernet_s = time_steps(
        lambda x, y: trainer.train_step(x, tf.one_hot(y, space.num_classes), trainer.subnets_for_step(rng)),
        batches, args.warmup)
    largest_s = time_steps(plain_train_step(extract_subnet(trainer.supernet, space.largest())),
                           batches, args.warmup)

    subnets = 2 + args.random_subnets
    supernet_ips, largest_ips = args.batch_size / supernet_s, args.batch_size / largest_s
    print(f"space {space.name}, batch {args.batch_size}, {args.steps} timed steps each")
    print(f"supernet (sandwich, {subnets} subnets/step): {supernet_ips:8.1f} images/s "
          f"({subnets * supernet_ips:.1f} subnet-images/s)")
    print(f"largest subnet alone:                  {largest_ips:8.1f} images/s")
    print(f"ratio per image:        {supernet_ips / largest_ips:.2f}  (target >= 0.6)")
    print(f"ratio per subnet-image: {subnets * supernet_ips / largest_ips:.2f}")


if __name__ == "__main__":
    main()
