"""Ctrl-C during a search: remembered even where Python swallows the KeyboardInterrupt."""
import os
import signal
import time

import pytest

from tuner.budget import Budget, resolve_target
from tuner.budget_oracle import make_oracle
from tuner.interrupts import remembered_interrupts
from tuner.subnet_tuner import SubnetTuner


@pytest.fixture
def python_sigint():
    """SIGINT as Python sets it up (a shell's background job starts with it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_swallowed_on_the_way_is_remembered(python_sigint):
    with remembered_interrupts() as interrupted:
        assert not interrupted.is_set()
        with pytest.raises(KeyboardInterrupt):  # raised at once, as Python does
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with remembered_interrupts() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert not interrupted.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_tuner_stops_before_the_next_trial_once_interrupted(digits_space, tmp_path,
                                                                python_sigint):
    oracle = make_oracle("random", digits_space, Budget(resolve_target("custom", "48KiB", "1MiB")),
                         max_trials=10, seed=0)
    scored = []
    tuner = SubnetTuner(oracle, lambda config: scored.append(config) or 0.5, digits_space,
                        directory=str(tmp_path), project_name="p", overwrite=True)

    def swallowing_interrupt(tuner, trial):  # as Python does in a finaliser
        if len(scored) == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                pass

    tuner.on_trial_end_hook = swallowing_interrupt
    with remembered_interrupts() as tuner.interrupted:
        with pytest.raises(KeyboardInterrupt):
            tuner.search(verbose=0)
    assert len(scored) == 3
    assert sum(t.status == "COMPLETED" for t in oracle.trials.values()) == 3
