"""The subnet tuner: a KerasTuner `BaseTuner` whose trials score subnets of a trained supernet.

KerasTuner's `Tuner` rejects tf_keras models (DESIGN.md §3), so this is a
`BaseTuner` and `run_trial` does the work: it reads the trial's values as a
`SubnetConfig`, makes it the supernet's active subnet (inherited weights, no
training, no retracing) and returns its top-1 accuracy on the search split
(training images the supernet never trained on; the val split is left to report what was
chosen, see `data`). With `fine_tune_steps` the subnet is extracted and fine-tuned on the
training split for that many steps first (slower: one new model per trial).
The predicted arena, flash and MACs are already in the trial: the budget
oracle wrote them when it created it.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from keras_tuner.engine import base_tuner

from mcuformer_tf.nas.data import ImageData
from mcuformer_tf.nas.evaluation import EVAL_BATCH, accuracy, traced_predict
from mcuformer_tf.nas.run_dir import write_json_atomic
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.nas.supernet import Supernet
from tuner.hyperparameters import config_from_values
from tuner.lost_trials import heartbeat, lease_seconds

FINE_TUNE_LR = 1e-4


class SubnetScorer:
    """Top-1 search-split accuracy of subnets of one supernet, optionally after a short fine-tune."""

    def __init__(self, supernet: Supernet, data: ImageData, fine_tune_steps: int = 0,
                 batch_size: int = 32, seed: int = 0):
        self.supernet, self.data = supernet, data
        self.fine_tune_steps, self.batch_size, self.seed = fine_tune_steps, batch_size, seed
        self.predict = traced_predict(supernet)
        self.search_batches = data.search_batches(EVAL_BATCH)

    def __call__(self, config: SubnetConfig) -> float:
        if self.fine_tune_steps:
            return self._fine_tuned(config)
        self.supernet.set_active(config)
        return accuracy(self.predict, self.search_batches)

    def _fine_tuned(self, config: SubnetConfig) -> float:
        import tf_keras as keras

        from mcuformer_tf.nas.extract import extract_subnet

        model = extract_subnet(self.supernet, config)
        model.compile(optimizer=keras.optimizers.AdamW(FINE_TUNE_LR),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        train = self.data.train_batches(self.batch_size, seed=self.seed).repeat()
        model.fit(train, steps_per_epoch=self.fine_tune_steps, epochs=1, verbose=0)
        return accuracy(traced_predict(model), self.data.search_batches(EVAL_BATCH, config.image_size))


class SubnetTuner(base_tuner.BaseTuner):
    """Runs the trials of a budget oracle: each scores one subnet (see the module docstring).

    `scorer` may be None in the chief of a distributed search, which runs no trial.
    `on_trial_end_hook(tuner, trial)` is called after each trial is recorded (progress display).
    `interrupted` (a threading.Event, see tuner.interrupts) stops the search before the next trial
    once set.
    """

    def __init__(self, oracle, scorer: SubnetScorer | None, space, on_trial_end_hook=None,
                 interrupted=None, **kwargs):
        super().__init__(oracle, **kwargs)
        self.scorer, self.space = scorer, space
        self.on_trial_end_hook, self.interrupted = on_trial_end_hook, interrupted
        self.eval_seconds = 0.0
        self.trials_run = 0

    def pre_create_trial(self):
        if self.interrupted is not None and self.interrupted.is_set():
            raise KeyboardInterrupt

    def run_trial(self, trial, *args, **kwargs):
        config = config_from_values(self.space, trial.hyperparameters.values)
        began = time.perf_counter()
        alive = (heartbeat(self.oracle, trial.trial_id, lease_seconds() / 4) if self._is_worker()
                 else contextlib.nullcontext())
        with alive:  # a distributed worker tells the chief it is alive (tuner.lost_trials)
            score = self.scorer(config)
        self.eval_seconds += time.perf_counter() - began
        self.trials_run += 1
        return {"search_accuracy": score}

    def on_search_begin(self):
        # The tuner's state file is what makes a rerun reload the project: write it (and the
        # oracle's) before the first trial. Its state never changes, so it is written only here.
        self.save()

    def save(self):
        """BaseTuner's save, the tuner's state file written atomically (as the oracle's is)."""
        if not self._is_worker():
            self.oracle.save()
        write_json_atomic(Path(self._get_tuner_fname()), self.get_state())

    def on_trial_end(self, trial):
        # As BaseTuner's, less its writes of the tuner's and the oracle's state: the oracle
        # writes its own when the trial ends (tuner.trial_end_writes).
        self.oracle.end_trial(trial)
        if self.on_trial_end_hook is not None:
            self.on_trial_end_hook(self, trial)
