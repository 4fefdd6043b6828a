"""`mcuformer-tf tune`: one-line errors, a search within budget, resume after SIGINT and SIGKILL."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import assert_one_line_error, run_cli

from mcuformer_tf.nas.search_space import SubnetConfig
from tuner.budget import Budget, resolve_target
from tuner.hyperparameters import config_from_values

BUDGET = ("--target", "custom", "--sram", "42KiB", "--flash", "1MiB")  # rejects about half
UNFUSED_BUDGET = ("--target", "custom", "--sram", "72KiB", "--flash", "1MiB")  # about half, unfused


@pytest.mark.parametrize("args, fragment", [
    (("--sram", "320 parsecs"), "--sram '320 parsecs' is not a size"),
    (("--flash", "0.1B"), "--flash '0.1B' is not a positive whole number of bytes"),
    (("--target", "stm32h7"), "unknown target 'stm32h7'"),
    (("--target", "custom", "--sram", "64KiB"), "target custom needs both --sram and --flash"),
])
def test_bad_budgets_are_one_line_errors(tmp_path, args, fragment):
    result = run_cli("tune", "--supernet", tmp_path, "--out", tmp_path / "t", *args)
    assert_one_line_error(result, fragment)


def test_missing_supernet_is_a_one_line_error(tmp_path):
    result = run_cli("tune", "--supernet", tmp_path / "nothing", "--out", tmp_path / "t")
    assert_one_line_error(result, "is not a training run")


def test_a_budget_nothing_fits_is_a_one_line_error(trained_run, tmp_path):
    result = run_cli("tune", "--supernet", trained_run.path, "--out", tmp_path / "t",
                     "--target", "custom", "--sram", "32KiB", "--flash", "1MiB")
    assert_one_line_error(result, "no subnet of space 'digits' fits custom")


def test_an_impossible_latency_is_a_one_line_error(trained_run, tmp_path):
    result = run_cli("tune", "--supernet", trained_run.path, "--out", tmp_path / "t", "--latency", "0.5ms",
                     "--clock", "480MHz")
    assert_one_line_error(result, "no subnet of space 'digits' runs within --latency 0.5 ms on stm32f746 at 480 MHz: "
                                  "the fastest, img32/p8 e32 d2")
    assert_one_line_error(run_cli("tune", "--supernet", trained_run.path, "--out", tmp_path / "t",
                                  "--latency", "fast"), "--latency 'fast' is not a duration")


def test_tune_under_a_latency_budget_records_the_estimate_and_resumes(trained_run, tmp_path):
    from mcuformer_tf.board import latency

    space = trained_run.space()
    times = sorted(latency.instructions(c) / 216e3 for c in space.sample_many(400, seed=5))
    budget_ms = round(times[len(times) // 3], 1)  # admits about a third of the space
    out = tmp_path / "t"
    args = ("tune", "--supernet", trained_run.path, "--out", out, "--target", "custom", "--sram", "1MiB",
            "--flash", "1MiB", "--latency", f"{budget_ms}ms", "--population", "2", "--parents", "1")
    first = run_cli(*args, "--trials", "2")
    assert first.exit_code == 0, first.output
    table = first.stdout.splitlines()
    header = next(line for line in table if line.split()[:2] == ["#", "search"])
    assert "ms@216MHz" in header
    kept = _trials(out)
    again = run_cli(*args, "--trials", "3")  # resumes: the same budget, latency included
    assert again.exit_code == 0, again.output
    trials = _trials(out)
    assert len(trials) == 3 and all(trials[k] == v for k, v in kept.items())
    budget = Budget(resolve_target("custom", "1MiB", "1MiB"), latency_ms=budget_ms)
    for _, values, _, metrics in trials.values():
        verdict = budget.check(config_from_values(space, values))
        assert verdict.fits and metrics["instructions"] == verdict.instructions
        assert verdict.instructions / 216e3 <= budget_ms
    best = json.loads((out / "results.json").read_text())["top"][0]
    row = next(line for line in again.stdout.splitlines() if line.startswith(" 1 "))
    assert f"{best['instructions'] / 216e3:,.1f}" in row.split()
    assert json.loads((out / "tune.json").read_text())["budget"]["latency_ms"] == budget_ms


def _trials(out):
    """{trial id: (status, values, search_accuracy, memory metrics)} of a search directory (a trial
    under way has neither score nor memory metrics on disk yet)."""
    trials = {}
    for path in sorted(Path(out, "search").glob("trial_*/trial.json")):
        data = json.loads(path.read_text())
        metrics = data["metrics"]["metrics"]
        score = metrics.get("search_accuracy", {}).get("observations", [{}])[0].get("value", [None])
        trials[data["trial_id"]] = (data["status"], data["hyperparameters"]["values"], score[0],
                                    {m: metrics[m]["observations"][0]["value"][0]
                                     for m in ("arena", "flash", "macs", "instructions") if m in metrics})
    return trials


def test_tune_finds_subnets_within_budget_and_resumes_to_more_trials(trained_run, tmp_path):
    out = tmp_path / "t"
    args = ("tune", "--supernet", trained_run.path, "--out", out, *BUDGET, "--population", "4",
            "--parents", "2")
    first = run_cli(*args, "--trials", "6")
    assert first.exit_code == 0, first.output
    assert "6 trials finished" in first.stdout
    assert "rejected before a trial existed" in first.stdout
    kept = _trials(out)
    again = run_cli(*args, "--trials", "10")
    assert again.exit_code == 0, again.output
    trials = _trials(out)
    assert len(trials) == 10 and all(t[0] == "COMPLETED" for t in trials.values())
    assert all(trials[k] == v for k, v in kept.items())
    space, budget = trained_run.space(), Budget(resolve_target("custom", "42KiB", "1MiB"))
    for status, values, score, metrics in trials.values():
        verdict = budget.check(config_from_values(space, values))
        assert verdict.fits and verdict.metrics() == metrics and 0 < score <= 1
    results = json.loads((out / "results.json").read_text())
    # equal accuracy goes to the smaller arena, then the fewer MACs, then the earlier trial
    best = min(trials.values(), key=lambda t: (-t[2], t[3]["arena"], t[3]["macs"]))
    assert results["top"][0]["search_accuracy"] == best[2]
    assert SubnetConfig.load(out / "best_config.json") == config_from_values(space, best[1])
    assert results["rejected"] > 0 and results["finished"] == 10
    table = again.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:2] == ["#", "search"])
    assert "arena" in table[header] and "MMACs" in table[header]
    assert table[header + 1].startswith(" 1 ")
    changed = run_cli(*args, "--trials", "10", "--sram", "320KiB")
    assert_one_line_error(changed, "holds a search with other settings (budget differ)")


def _default_sigint():
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt even
    where the test runs in the background of a shell (which starts it with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(run_path, out, trials):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, "-m", "mcuformer_tf", "tune", "--supernet", str(run_path), "--out",
         str(out), *BUDGET, "--trials", str(trials), "--fine-tune-steps", "3",
         "--population", "4", "--parents", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)


def _wait_for_finished(out, count, process, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(t[0] == "COMPLETED" for t in _trials(out).values()) if (
            Path(out, "search").is_dir()) else 0
        if done >= count:
            return done
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{count} trials did not finish in {timeout} s")


def test_killed_tune_resumes_keeping_finished_trials(trained_run, tmp_path):
    out, total = tmp_path / "t", 9
    for sig, after in ((signal.SIGINT, 2), (signal.SIGKILL, 4)):
        process = _start(trained_run.path, out, total)
        _wait_for_finished(out, after, process)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert process.returncode == 130, stderr[-2000:]
            assert "interrupted: the finished trials are kept" in stderr
        else:
            assert process.returncode == -signal.SIGKILL
        finished = {k: v for k, v in _trials(out).items() if v[0] == "COMPLETED"}
        assert len(finished) >= after
        if sig == signal.SIGINT:
            kept = finished
        else:
            assert all(finished[k] == v for k, v in kept.items())
            kept = finished
    done = run_cli("tune", "--supernet", trained_run.path, "--out", out, *BUDGET, "--trials",
                   total, "--fine-tune-steps", 3, "--population", 4, "--parents", 2)
    assert done.exit_code == 0, done.output
    assert f"{total} trials finished" in done.stdout
    trials = _trials(out)
    assert len(trials) == total and all(t[0] == "COMPLETED" for t in trials.values())
    assert all(trials[k] == v for k, v in kept.items())
    hashes = {json.dumps(v[1], sort_keys=True) for v in trials.values()}
    assert len(hashes) == total


@pytest.mark.slow
def test_best_subnet_measured_in_tflm_stays_within_budget(trained_run, tmp_path):
    """The tuned subnet, exported and compiled: stock TFLM's measured arena (unfused plan) fits
    the budget, and the compiler's fused plan is the non-persistent arena the oracle predicted."""
    from mcuformer_tf.compiler.pipeline import compile_model
    from mcuformer_tf.memory.arena_search import find_arena
    from mcuformer_tf.memory.estimate import memory_of

    out, model = tmp_path / "t", tmp_path / "model.tflite"
    result = run_cli("tune", "--supernet", trained_run.path, "--out", out, *UNFUSED_BUDGET,
                     "--trials", 8, "--memory-plan", "unfused", "--population", 4, "--parents", 2)
    assert result.exit_code == 0, result.output
    best = SubnetConfig.load(out / "best_config.json")
    exported = run_cli("export", "--supernet", trained_run.path, "--config",
                       out / "best_config.json", "--qat-epochs", 0, "-o", model)
    assert exported.exit_code == 0, exported.output
    target = resolve_target("custom", UNFUSED_BUDGET[3], UNFUSED_BUDGET[5])
    measured = find_arena(model)
    assert measured.arena + target.runtime_sram <= target.sram
    assert model.stat().st_size + target.runtime_flash <= target.flash
    compiled = compile_model(model.read_bytes())
    assert compiled.plan.size == memory_of(best).fused.non_persistent


def test_tune_at_4_bits_puts_them_in_the_best_config_and_export_reads_them(trained_run, tmp_path):
    out = tmp_path / "t"
    result = run_cli("tune", "--supernet", trained_run.path, "--out", out, *BUDGET, "--weight-bits", "4",
                     "--trials", "2", "--population", "2", "--parents", "1")
    assert result.exit_code == 0, result.output
    best = SubnetConfig.load(out / "best_config.json")
    assert best.weight_bits == 4 and f"{best.describe()}" in result.stdout and " w4" in best.describe()
    assert json.loads((out / "tune.json").read_text())["space"]["weight_bits"] == [4]
    space, budget = dataclasses.replace(trained_run.space(), weight_bits=(4,)), Budget(resolve_target(*BUDGET[1::2]))
    for _, values, _, metrics in _trials(out).values():
        assert values["weight_bits"] == 4 and budget.check(config_from_values(space, values)).metrics() == metrics
    assert_one_line_error(run_cli("tune", "--supernet", trained_run.path, "--out", out, *BUDGET, "--trials", "2",
                                  "--population", "2", "--parents", "1"),
                          "holds a search with other settings (space differ)")


@pytest.mark.slow  # an export: a minute
def test_export_takes_the_tuned_weight_bits(trained_run, tmp_path):
    config = dataclasses.replace(trained_run.space().smallest(), weight_bits=4)
    config.save(tmp_path / "c.json")
    result = run_cli("export", "--supernet", trained_run.path, "--config", tmp_path / "c.json", "--qat-epochs", 0,
                     "-o", tmp_path / "m.tflite")
    assert result.exit_code == 0, result.output
    assert f"export {config.describe()}: 0 QAT epochs, 4-bit weights" in result.output
