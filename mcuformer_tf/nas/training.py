"""Supernet training with the sandwich rule, checkpoints every epoch and resume.

Each step trains the largest subnet on the labels, then the smallest and
`random_subnets` random subnets on the same batch, each learning half from the
labels and half from the largest subnet's predictions (in-place distillation,
BigNAS). The largest subnet's loss and the students' mean loss weigh half
each, and their gradients make one AdamW update. The step is one
`tf.function` traced once: the subnets enter as fixed-shape int32 encodings
(see `supernet.py`). It runs under any `tf.distribute` strategy (see
`distribution`) and Keras precision policy (see `precision`). Labels arrive as
soft (one-hot, possibly mixed) vectors; the recipe in the settings decides the
augmentation (see `augmentation`), the drop path and the schedule.
"""
from __future__ import annotations

import random
import sys
import time

import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas import precision
from mcuformer_tf.nas.data import ImageData
from mcuformer_tf.nas.determinism import seed_run
from mcuformer_tf.nas.distribution import CheckpointWriter, make_strategy
from mcuformer_tf.nas.evaluation import EVAL_BATCH, accuracy, traced_predict
from mcuformer_tf.nas.nan_guard import finite_loss
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.nas.supernet import Supernet
from mcuformer_tf.nas.train_settings import TrainSettings


class SandwichTrainer:
    """Owns the supernet, optimizer and traced train step of one run (see module docstring)."""

    def __init__(self, space: SearchSpace, settings: TrainSettings, steps_per_epoch: int,
                 strategy: tf.distribute.Strategy):
        self.space, self.settings, self.strategy = space, settings, strategy
        self.steps_per_epoch = steps_per_epoch
        total = settings.epochs * steps_per_epoch
        warmup = min(settings.warmup_epochs * steps_per_epoch, total - 1)
        with strategy.scope(), precision.policy_scope(settings.precision):
            self.supernet = Supernet(space, drop_path=settings.drop_path)
            schedule = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=0.0, decay_steps=total - warmup, alpha=0.01,
                warmup_target=settings.learning_rate, warmup_steps=warmup)
            self.optimizer = precision.wrap_optimizer(keras.optimizers.AdamW(
                schedule, weight_decay=settings.weight_decay, global_clipnorm=1.0), settings.precision)
            self.optimizer.build(self.supernet.trainable_variables)
            self.epoch = tf.Variable(0, trainable=False, dtype=tf.int64, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=self.supernet, optimizer=self.optimizer,
                                              epoch=self.epoch)
        self.hard_loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=settings.label_smoothing,
            reduction=keras.losses.Reduction.NONE)
        self.predict = traced_predict(self.supernet)

    # -- one step ---------------------------------------------------------------
    def subnets_for_step(self, rng: random.Random) -> list[dict]:
        """Encodings of the sandwich: largest, smallest, then random subnets."""
        configs = [self.space.largest(), self.space.smallest()]
        configs += [self.space.sample(rng) for _ in range(self.settings.random_subnets)]
        return [tf.nest.map_structure(tf.convert_to_tensor, self.supernet.encode(c))
                for c in configs]

    def _replica_step(self, images, onehot, encodings):
        """One sandwich update on a replica's share of a batch; `onehot`: soft labels [b, classes]."""
        batch = self.settings.batch_size
        variables = self.supernet.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.supernet(images, training=True, config=encodings[0])
            loss = tf.nn.compute_average_loss(self.hard_loss(onehot, logits), global_batch_size=batch)
            teacher = tf.stop_gradient(tf.nn.softmax(logits))
            students = encodings[1:]
            for encoding in students:
                student = self.supernet(images, training=True, config=encoding)
                per_example = 0.5 * self.hard_loss(onehot, student) + 0.5 * (
                    keras.losses.categorical_crossentropy(teacher, student, from_logits=True))
                loss += tf.nn.compute_average_loss(per_example, global_batch_size=batch) / len(
                    students)
            loss /= 2.0
            scaled = precision.scale_loss(loss, self.optimizer)
        gradients = precision.unscale_gradients(tape.gradient(scaled, variables), self.optimizer)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return loss

    @tf.function(autograph=False)
    def train_step(self, images, onehot, encodings):
        losses = self.strategy.run(self._replica_step, args=(images, onehot, encodings))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    # -- epochs -----------------------------------------------------------------
    def val_accuracy(self, config, data: ImageData) -> float:
        self.supernet.set_active(config)
        return accuracy(self.predict, data.val_batches(EVAL_BATCH))

    def run_epoch(self, data: ImageData, epoch: int, progress: bool, checkpoint: str | None = None) -> float:
        """The epoch's mean loss; NonFiniteLoss (naming `checkpoint`, the last saved) at a NaN or
        infinite one."""
        rng = random.Random(f"{self.settings.seed}-{epoch}")
        batches = data.train_batches(self.settings.batch_size, seed=self.settings.seed + epoch,
                                     recipe=self.settings)
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["loss"],
                                  verbose=1 if progress else 0)
        total = 0.0
        for step, (images, onehot) in enumerate(self.strategy.experimental_distribute_dataset(
                batches)):
            loss = finite_loss(float(self.train_step(images, onehot, self.subnets_for_step(rng))), epoch,
                               step + 1, checkpoint)
            total += loss
            bar.update(step + 1, [("loss", loss)])
        return total / self.steps_per_epoch


def train_supernet(space: SearchSpace, data: ImageData, run: RunDir, settings: TrainSettings,
                   strategy_name: str = "default", resume: bool = False, log=print,
                   init_from: str | None = None) -> list[dict]:
    """Train (or with `resume`, continue) a supernet in `run`; returns the epoch history.

    `init_from`: a timm DeiT/ViT state dict to start from where no checkpoint is restored
    (see `init_from`).
    """
    if data.num_classes != space.num_classes:
        raise McuformerError(f"data {data.name} has {data.num_classes} classes but the space "
                             f"{space.name!r} has {space.num_classes}")
    steps = data.train_count // settings.batch_size
    if steps < 1:
        raise McuformerError(f"batch size {settings.batch_size} exceeds the {data.train_count} "
                             f"training images of {data.name}")
    seed_run(settings.seed)  # weight init, augmentation: one seed, one run
    strategy = make_strategy(strategy_name)
    trainer = SandwichTrainer(space, settings, steps, strategy)
    checkpoint = run.good_checkpoint(warn=log) if resume else None
    if checkpoint:
        trainer.checkpoint.restore(checkpoint).assert_existing_objects_matched()
    elif init_from:
        from mcuformer_tf.nas.init_from import init_supernet

        for line in init_supernet(trainer.supernet, init_from).lines():
            log(line)
    writer = CheckpointWriter(trainer.checkpoint, run.checkpoint_dir, strategy)
    start = int(trainer.epoch.numpy())
    if start:
        log(f"resuming {run.path} after epoch {start}")
    for epoch in range(start + 1, settings.epochs + 1):
        began = time.time()
        loss = trainer.run_epoch(data, epoch, progress=sys.stdout.isatty(),
                                 checkpoint=writer.manager.latest_checkpoint)
        entry = {
            "epoch": epoch, "loss": round(loss, 5),
            "val_acc_largest": trainer.val_accuracy(space.largest(), data),
            "val_acc_smallest": trainer.val_accuracy(space.smallest(), data),
            "seconds": round(time.time() - began, 2),
        }
        trainer.epoch.assign(epoch)
        writer.save(epoch)
        if writer.chief:
            run.record_epoch(entry)
        log(f"epoch {epoch}/{settings.epochs}  loss {loss:.4f}  val acc largest "
            f"{entry['val_acc_largest']:.2%}  smallest {entry['val_acc_smallest']:.2%}  "
            f"({entry['seconds']:.1f} s)")
    return run.history()


def load_supernet(run: RunDir) -> Supernet:
    """The supernet of a run with the weights of its latest readable checkpoint (a damaged newer
    one is skipped, saying so on stderr)."""
    space = run.space()
    checkpoint_path = run.good_checkpoint(warn=lambda line: print(line, file=sys.stderr))
    if checkpoint_path is None:
        raise McuformerError(f"{run.path} has no checkpoint yet (no epoch finished)")
    supernet = Supernet(space)
    tf.train.Checkpoint(model=supernet).restore(checkpoint_path).expect_partial()
    return supernet
