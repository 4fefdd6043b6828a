"""Supernet training: the sandwich step, one trace, checkpoints, and resuming a killed run."""
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mcuformer_tf.nas.data import load_digits
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.training import SandwichTrainer, TrainSettings, train_supernet


def test_sandwich_step_trains_every_subnet_with_one_trace(digits_space):
    trainer = SandwichTrainer(digits_space, TrainSettings(epochs=1, batch_size=8, random_subnets=2),
                              steps_per_epoch=10, strategy=tf.distribute.get_strategy())
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2])
    labels = tf.one_hot(tf.range(8), 10)
    before = [v.numpy().copy() for v in trainer.supernet.trainable_variables]
    rng = random.Random(0)
    losses = [float(trainer.train_step(images, labels, trainer.subnets_for_step(rng)))
              for _ in range(4)]
    assert all(np.isfinite(losses))
    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert int(trainer.optimizer.iterations.numpy()) == 4
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(before, trainer.supernet.trainable_variables)]
    assert all(changed)  # the largest subnet touches every weight of the supernet


def test_a_finished_epoch_is_recorded_and_checkpointed(trained_run, trained_epochs):
    history = trained_run.history()
    assert [entry["epoch"] for entry in history] == list(range(1, trained_epochs + 1))
    assert 0.0 <= history[0]["val_acc_largest"] <= 1.0
    assert trained_run.latest_checkpoint().endswith(f"ckpt-{trained_epochs}")


def test_resume_continues_after_the_last_finished_epoch(trained_run, trained_epochs, tmp_path):
    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run.path, run.path)
    lines = []
    history = train_supernet(run.space(), load_digits(32), run,
                             TrainSettings(epochs=trained_epochs + 1, batch_size=128), resume=True,
                             log=lines.append)
    assert lines[0] == f"resuming {run.path} after epoch {trained_epochs}"
    assert [entry["epoch"] for entry in history] == list(range(1, trained_epochs + 2))
    assert history[:trained_epochs] == trained_run.history()
    assert run.latest_checkpoint().endswith(f"ckpt-{trained_epochs + 1}")


def test_a_killed_run_resumes_without_losing_finished_epochs(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mcuformer_tf", "train", "--out", str(out), "--epochs", "3",
               "--batch-size", "128", "--random-subnets", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "history.json").exists() and time.time() < deadline:
            time.sleep(0.5)
        assert (out / "history.json").exists(), "the first epoch never finished"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = json.loads((out / "history.json").read_text())
    assert len(finished) in (1, 2)
    result = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {out} after epoch {len(finished)}" in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert history[:len(finished)] == finished
    assert sorted(os.listdir(out / "checkpoints"))[-1].startswith("ckpt-3")


@pytest.mark.slow
def test_one_seed_trains_one_supernet(tmp_path, digits_space):
    """Op determinism: two runs of one seed end with equal losses, accuracies and weights (make
    test-all; make test keeps test_qat_recipe's one-seed check of the same seeding)."""
    digits = load_digits(32)
    data = dataclasses.replace(digits, train=digits.train.take(256), train_count=256)  # 2 steps
    results = []
    for name in ("first", "second"):
        run = RunDir(tmp_path / name)
        run.create({"space": digits_space.to_dict(), "data": "digits", "settings": {}})
        history = train_supernet(digits_space, data, run,
                                 TrainSettings(epochs=1, batch_size=128, random_subnets=0, seed=5),
                                 log=lambda *_: None)
        reader = tf.train.load_checkpoint(run.latest_checkpoint())
        weights = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
        results.append(([{k: v for k, v in entry.items() if k != "seconds"} for entry in history], weights))
    (history, weights), (history_again, weights_again) = results
    assert history == history_again
    assert weights.keys() == weights_again.keys() and len(weights) > 50
    for key, value in weights.items():
        np.testing.assert_array_equal(value, weights_again[key], err_msg=key)
