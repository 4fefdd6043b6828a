"""Training survives a NaN loss and a torn checkpoint: the run stops at the non-finite step with
one line naming epoch and step, keeping the last good checkpoint; a truncated or corrupt newest
checkpoint is skipped on resume, saying so, and the one before it is used."""
import dataclasses
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.data import load_digits
from mcuformer_tf.nas.run_dir import RunDir
from mcuformer_tf.nas.supernet import Supernet
from mcuformer_tf.nas.training import TrainSettings, load_supernet, train_supernet


@pytest.fixture
def run_copy(trained_run, tmp_path):
    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run.path, run.path)
    return run


def test_a_nan_loss_stops_the_run_naming_epoch_and_step_and_keeps_the_checkpoint(
        run_copy, trained_run, trained_epochs):
    data = load_digits(32)
    poisoned = dataclasses.replace(  # 2 steps of 128 images, all NaN
        data, train=data.train.take(256).map(lambda image, label: (image * float("nan"), label)), train_count=256)
    before = {p.name: p.read_bytes() for p in run_copy.checkpoint_dir.iterdir()}
    with pytest.raises(McuformerError) as raised:
        train_supernet(run_copy.space(), poisoned, run_copy,
                       TrainSettings(epochs=trained_epochs + 1, batch_size=128, random_subnets=0), resume=True,
                       log=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the loss is nan at epoch {trained_epochs + 1}, step 1: training stopped; the last "
                              f"good checkpoint {run_copy.checkpoint_dir / f'ckpt-{trained_epochs}'} is kept")
    assert {p.name: p.read_bytes() for p in run_copy.checkpoint_dir.iterdir()} == before
    assert run_copy.good_checkpoint().endswith(f"ckpt-{trained_epochs}")
    assert run_copy.history() == trained_run.history()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_newest_checkpoint_is_skipped_on_resume_saying_so(run_copy, trained_epochs, damage):
    newest = run_copy.checkpoint_dir / f"ckpt-{trained_epochs}"
    data_file = next(run_copy.checkpoint_dir.glob(f"ckpt-{trained_epochs}.data-*"))
    if damage == "truncated":
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    else:
        index = newest.with_suffix(".index")
        index.write_bytes(index.read_bytes()[:40] + b"\xff" * 64)
    lines = []
    previous = run_copy.good_checkpoint(warn=lines.append)
    assert previous == str(run_copy.checkpoint_dir / f"ckpt-{trained_epochs - 1}")
    assert len(lines) == 1 and lines[0].startswith(f"checkpoint {newest} is damaged (")
    assert lines[0].endswith("): using the one before it")
    supernet = load_supernet(run_copy)  # as the tuner and export load it
    expected = Supernet(run_copy.space())
    tf.train.Checkpoint(model=expected).restore(previous).expect_partial()
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(supernet.variables, expected.variables))
