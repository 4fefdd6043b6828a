"""A distributed search that loses no trial to a dead worker, and a project directory whose
damaged files are named in one line.

In KerasTuner's chief/worker mode a worker killed mid-trial leaves its trial among the oracle's
ongoing ones for good: no other worker is given it, and the chief, which waits for every ongoing
trial to end, never exits. With `ReclaimsLostTrials` in an oracle's bases, every worker shows it
is alive while it runs a trial (`heartbeat`: it asks the chief for its trial every lease / 4),
and whenever a worker asks for a trial, any trial whose worker has not been heard from for the
lease is sent back for a rerun (KerasTuner's retry queue, which the next worker asking takes
first), saying so on stderr. A worker that finds nothing new to start while another's trial is
still running waits (an IDLE trial) instead of exiting, so a lost trial always has a worker left
to rerun it. The lease is MCUFORMER_TUNE_WORKER_TIMEOUT seconds (default 300).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine import trial as trial_module

from mcuformer_tf.errors import McuformerError

LEASE_VARIABLE = "MCUFORMER_TUNE_WORKER_TIMEOUT"
DEFAULT_LEASE = 300.0
IDLE_WAIT = 1.0  # seconds a waiting worker's request is held before it asks again


def lease_seconds() -> float:
    """The worker timeout from the environment (MCUFORMER_TUNE_WORKER_TIMEOUT), in seconds."""
    text = os.environ.get(LEASE_VARIABLE, "")
    try:
        lease = float(text) if text else DEFAULT_LEASE
    except ValueError:
        lease = float("nan")
    if not lease > 0:
        raise McuformerError(f"{LEASE_VARIABLE}={text!r} is not a positive number of seconds")
    return lease


class ReclaimsLostTrials:
    """An oracle mixin: a trial whose worker went silent for the lease is rerun by another."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lease = lease_seconds()
        self._heard: dict[str, float] = {}  # tuner id -> when it last spoke (time.monotonic)

    def _reclaim_lost(self, asking: str) -> None:
        now = time.monotonic()
        for tuner_id, trial in list(self.ongoing_trials.items()):
            heard = self._heard.setdefault(tuner_id, now)  # a reloaded chief hears everyone anew
            if tuner_id == asking or now - heard <= self.lease:
                continue
            self.ongoing_trials.pop(tuner_id)
            self.tuner_ids.discard(tuner_id)
            self._heard.pop(tuner_id)
            self._retry_queue.append(trial.trial_id)
            print(f"trial {trial.trial_id}: worker {tuner_id} not heard from for {self.lease:g} s; "
                  "the next worker reruns it", file=sys.stderr)

    @kt.synchronized
    def create_trial(self, tuner_id):
        self._heard[tuner_id] = time.monotonic()
        self._reclaim_lost(tuner_id)
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.STOPPED and self.ongoing_trials:
            self.tuner_ids.add(tuner_id)  # stays a worker: another's trial may yet need it
            time.sleep(IDLE_WAIT)
            return trial_module.Trial(self.get_space(), status=trial_module.TrialStatus.IDLE)
        return trial

    @kt.synchronized
    def get_trial(self, trial_id):
        for tuner_id, trial in self.ongoing_trials.items():
            if trial.trial_id == trial_id:
                self._heard[tuner_id] = time.monotonic()
        return super().get_trial(trial_id)

    def reload(self):
        """KerasTuner's reload, with one line naming a file it cannot read."""
        project = Path(self._project_dir)
        for path in [project / "oracle.json", *sorted(project.glob("trial_*/trial.json"))]:
            if path.is_file():
                try:
                    state = json.loads(path.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise McuformerError(f"{path} is damaged ({err}); delete it to rerun that part of the "
                                         "search, or choose another --out") from None
                if not isinstance(state, dict):
                    raise McuformerError(f"{path} is damaged (not a JSON object); delete it to rerun that "
                                         "part of the search, or choose another --out")
        try:
            super().reload()
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise McuformerError(f"{project} holds a damaged oracle.json or trial.json ({err!r}); delete "
                                 "it, or choose another --out") from None


@contextlib.contextmanager
def heartbeat(oracle, trial_id: str, interval: float):
    """While the block runs, asks `oracle` (a worker's client of the chief) for the trial every
    `interval` seconds, so the chief knows this worker is alive."""
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # the chief gone: the search ends anyway
                oracle.get_trial(trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
