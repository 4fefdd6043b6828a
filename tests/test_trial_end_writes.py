"""Budget oracles write a trial when it ends: an interrupted trial is drawn again on resume."""
import json
import os
import tempfile
from pathlib import Path

import pytest

from tuner.budget import Budget, resolve_target
from tuner.budget_oracle import make_oracle
from tuner.hyperparameters import config_from_values


def _finish(oracle, trial, space):
    config = config_from_values(space, trial.hyperparameters.values)
    oracle.update_trial(trial.trial_id, {"search_accuracy": config.mac_count() / 1e7})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


@pytest.mark.parametrize("algorithm", ["evolution", "random"])
def test_an_interrupted_trial_is_drawn_again_and_no_finished_one_reruns(digits_space, algorithm):
    budget = Budget(resolve_target("custom", "48KiB", "1MiB"))
    directory = tempfile.mkdtemp()

    def oracle():
        made = make_oracle(algorithm, digits_space, budget, max_trials=20, seed=5,
                           **({"population_size": 3, "parents": 2}
                              if algorithm == "evolution" else {}))
        made._set_project_dir(directory, "p")
        made.verbose = 0
        return made

    first = oracle()
    for _ in range(5):
        _finish(first, first.create_trial("tuner0"), digits_space)
    running = first.create_trial("tuner0")  # then the process dies
    project = Path(directory, "p")
    assert sorted(os.listdir(project)) == ["oracle.json"] + [f"trial_0{k}" for k in range(5)]
    assert json.loads((project / "oracle.json").read_text())["ongoing_trials"] == {}

    again = oracle()
    again.reload()
    assert sorted(again.trials) == [f"0{k}" for k in range(5)]
    assert all(t.status == "COMPLETED" for t in again.trials.values())
    redrawn = again.create_trial("tuner0")
    assert (redrawn.trial_id, redrawn.hyperparameters.values) == (
        running.trial_id, running.hyperparameters.values)
    assert redrawn.metrics.get_last_value("arena") == running.metrics.get_last_value("arena")


def test_a_save_killed_before_its_rename_leaves_the_previous_state(digits_space, monkeypatch, tmp_path):
    oracle = make_oracle("random", digits_space, Budget(resolve_target("custom", "48KiB", "1MiB")),
                         max_trials=5, seed=5)
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    _finish(oracle, oracle.create_trial("tuner0"), digits_space)
    saved = (tmp_path / "p" / "oracle.json").read_text()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies with the new state in the temp file only

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _finish(oracle, oracle.create_trial("tuner0"), digits_space)
    assert (tmp_path / "p" / "oracle.json").read_text() == saved
    assert not (tmp_path / "p" / "trial_01" / "trial.json").exists()
