"""--strategy multi-worker: two CPU workers on loopback (MultiWorkerMirroredStrategy from
TF_CONFIG) train the same weights as one process on the same global batch, only the chief writes
the run, and a killed two-worker run resumes from the chief's checkpoint."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

TINY = {"name": "tiny", "num_classes": 10, "image_size": [16], "patch_size": [8], "embed_dim": [16, 32],
        "depth": [1, 2], "num_heads": [1], "mlp_ratio": [2], "rank_ratio": [0.5, 1.0]}


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _command(space_file, out, epochs, *extra):
    """The train command; `space_file` None to resume (the run records its space)."""
    space = ["--space", str(space_file)] if space_file else []
    return [sys.executable, "-m", "mcuformer_tf", "train", *space, "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "64", "--random-subnets", "0", *extra]


def _start_workers(command):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(command + ["--strategy", "multi-worker"], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def _finish(processes, timeout=900):
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


def _weights(out):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out / "checkpoints")))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.slow
def test_two_workers_train_the_weights_of_one_on_the_same_global_batch(tmp_path, space_file):
    single = subprocess.run(_command(space_file, tmp_path / "one", 1), capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    _finish(_start_workers(_command(space_file, tmp_path / "two", 1)))
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 10
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=2e-5, rtol=1e-4, err_msg=name)
    assert sorted(os.listdir(tmp_path / "two")) == ["checkpoints", "history.json", "run.json"]
    # the loss each step reports sums the workers' halves over the global batch: twice the
    # 1-worker loss would mean that each worker took the whole batch (Adam would hide that)
    (loss_one,), (loss_two,) = ([e["loss"] for e in json.loads((tmp_path / run / "history.json").read_text())]
                                for run in ("one", "two"))
    assert loss_two == pytest.approx(loss_one, rel=1e-4)


@pytest.mark.slow
def test_a_killed_two_worker_run_resumes(tmp_path, space_file):
    out = tmp_path / "run"
    processes = _start_workers(_command(space_file, out, 3))
    deadline = time.time() + 600
    while not (out / "history.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = json.loads((out / "history.json").read_text())
    assert 1 <= len(finished) <= 2
    outputs = _finish(_start_workers(_command(None, out, 3, "--resume")))
    assert f"resuming {out} after epoch {len(finished)}" in outputs[0]
    history = json.loads((out / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert history[:len(finished)] == finished
