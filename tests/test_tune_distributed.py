"""KerasTuner's chief/worker mode: a chief and two workers on loopback finish a search together."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mcuformer_tf.nas.search_space import SubnetConfig

TRIALS = 8
BUDGET = ("--target", "custom", "--sram", "42KiB", "--flash", "1MiB")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(role, run_path, out, port):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), KERASTUNER_TUNER_ID=role,
               KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
    return subprocess.Popen(
        [sys.executable, "-m", "mcuformer_tf", "tune", "--supernet", str(run_path), "--out",
         str(out), *BUDGET, "--trials", str(TRIALS), "--population", "4", "--parents", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_chief_and_two_workers_finish_a_search_together(trained_run, tmp_path):
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.training import load_supernet
    from tuner.subnet_tuner import SubnetScorer

    out, port = tmp_path / "t", _free_port()
    chief = _start("chief", trained_run.path, out, port)
    workers = [_start(f"worker{k}", trained_run.path, out, port) for k in range(2)]
    try:
        outputs = [p.communicate(timeout=400) for p in [chief] + workers]
    finally:
        for p in [chief] + workers:
            p.kill()
    for p, (stdout, stderr) in zip([chief] + workers, outputs):
        assert p.returncode == 0, stderr[-3000:]
    ran = [int(stdout.split(" ran ")[1].split()[0]) for stdout, _ in outputs[1:]]
    assert sum(ran) == TRIALS
    assert f"{TRIALS} trials finished" in outputs[0][0]
    trials = [json.loads(p.read_text()) for p in Path(out, "search").glob("trial_*/trial.json")]
    assert len(trials) == TRIALS and {t["status"] for t in trials} == {"COMPLETED"}
    best = max(trials, key=lambda t: t["score"])
    results = json.loads((out / "results.json").read_text())
    assert results["top"][0]["val_accuracy"] == best["score"]
    # The best score a worker reported is what this process measures for the same subnet.
    config = SubnetConfig.load(out / "best_config.json")
    scorer = SubnetScorer(load_supernet(trained_run), load_digits(32))
    assert scorer(config) == best["score"]
