"""The tuner survives a dead worker and damaged project files.

A chief and two workers search together; one worker is SIGKILLed in the middle of a trial. The
chief sends that trial to the surviving worker once the lost one has been silent for the worker
timeout (MCUFORMER_TUNE_WORKER_TIMEOUT), and the search ends with every trial completed, none lost
and none run twice in the record. A damaged oracle.json or trial.json is named in one line.
"""
import json
import signal
import time
from pathlib import Path

import pytest
from tune_cluster import free_port, start

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import SearchSpace
from tuner.budget import Budget, resolve_target
from tuner.budget_oracle import make_oracle

TRIALS = 6
LEASE = 8  # seconds of silence after which a worker counts as lost
SLOW_TRIAL = ("--fine-tune-steps", "30")  # trials of seconds, so that a kill lands in one


def _ongoing(out) -> dict:
    try:
        return json.loads((Path(out) / "search" / "oracle.json").read_text())["ongoing_trials"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_no_trial(trained_run, tmp_path):
    out, port = tmp_path / "t", free_port()
    lease = {"MCUFORMER_TUNE_WORKER_TIMEOUT": str(LEASE)}
    chief = start("chief", trained_run.path, out, port, TRIALS, *SLOW_TRIAL, **lease)
    workers = [start(f"worker{k}", trained_run.path, out, port, TRIALS, *SLOW_TRIAL, **lease) for k in range(2)]
    try:
        deadline = time.time() + 400
        while "worker0" not in _ongoing(out) and time.time() < deadline:
            time.sleep(0.2)
        lost = _ongoing(out).get("worker0")
        assert lost is not None, "worker0 never ran a trial while another one ended"
        workers[0].send_signal(signal.SIGKILL)
        outputs = [p.communicate(timeout=600) for p in (chief, workers[1])]
    finally:
        for p in [chief] + workers:
            p.kill()
    for p, (stdout, stderr) in zip((chief, workers[1]), outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert f"trial {lost}: worker worker0 not heard from for {LEASE} s; the next worker reruns it" in outputs[0][1]
    assert f"{TRIALS} trials finished" in outputs[0][0]
    files = (out / "search").glob("trial_*/trial.json")
    trials = {t["trial_id"]: t for t in (json.loads(p.read_text()) for p in files)}
    assert sorted(trials) == [f"{k}" for k in range(TRIALS)] and {t["status"] for t in trials.values()} == {"COMPLETED"}
    state = json.loads((out / "search" / "oracle.json").read_text())
    assert state["ongoing_trials"] == {} and state["retry_queue"] == []
    assert sorted(state["end_order"]) == sorted(trials)  # each trial recorded once
    print(f"trial {lost} lost with worker0, rerun by worker1; {len(trials)} of {TRIALS} trials completed")


@pytest.fixture
def oracle(tmp_path):
    oracle = make_oracle("random", SearchSpace.load("digits"), Budget(resolve_target("custom", "42KiB", "1MiB")), 4)
    oracle._set_project_dir(str(tmp_path), "search")
    return oracle


@pytest.mark.parametrize("name, text", [("oracle.json", '{"ongoing_trials": {'),
                                        ("trial_0/trial.json", "\x00\x01 not json"),
                                        ("trial_1/trial.json", "[1, 2]")])
def test_a_damaged_project_file_is_named_in_one_line(oracle, tmp_path, name, text):
    path = tmp_path / "search" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(McuformerError) as raised:
        oracle.reload()
    message = str(raised.value)
    assert message.startswith(f"{path} is damaged (") and "\n" not in message
