"""An oracle mixin that writes the project directory once per trial, when the trial ends.

A KerasTuner oracle writes a trial's `trial.json` when it creates the trial, when
the trial reports and when it ends, and `oracle.json` when it creates and ends
one: five writes a trial, and a BaseTuner adds its own state file. When a trial
scores in a few dozen milliseconds (a subnet of the digits demo) those writes
are a tenth of the search. `WritesAtTrialEnd` (before the oracle class in the
bases) keeps the two that a resume needs: the ended trial's file, and the
oracle's state written after the trial has left the ongoing ones, so an
interruption never sends a finished trial back for a rerun. Both are written
atomically (temp file + rename, as every file of a run): a kill in the middle
of a write leaves the previous state, never a truncated file (KerasTuner's own
writes truncate first).

A trial interrupted while it runs has no file, and the oracle's saved state is
the one from before it was drawn: a resumed search draws it again (the
evolution and random oracles keep their random state in that file, so it is
the same subnet) and runs it, as KerasTuner reruns an interrupted trial.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine import trial as trial_module

from mcuformer_tf.nas.run_dir import write_json_atomic

RUNNING = trial_module.TrialStatus.RUNNING


class WritesAtTrialEnd:
    """Writes `trial.json` and `oracle.json` only when a trial ends (see the module docstring)."""

    _holding_state = False

    @contextlib.contextmanager
    def _state_held(self):
        held, self._holding_state = self._holding_state, True
        try:
            yield
        finally:
            self._holding_state = held

    def save(self):
        if not self._holding_state:  # KerasTuner's Oracle.save, atomically
            write_json_atomic(Path(self._get_oracle_fname()), self.get_state())

    def _save_trial(self, trial):
        if trial.status != RUNNING:  # KerasTuner's Oracle._save_trial, atomically
            write_json_atomic(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    @kt.synchronized
    def create_trial(self, tuner_id):
        with self._state_held():
            return super().create_trial(tuner_id)

    @kt.synchronized
    def end_trial(self, trial):
        with self._state_held():
            super().end_trial(trial)
        self.save()
