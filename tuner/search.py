"""One `mcuformer-tf tune` session: budget oracle + subnet tuner over a trained supernet.

    <out>/tune.json          what the search was started with (resumes must match it)
    <out>/search/            the KerasTuner project (oracle.json, trial_*/trial.json)
    <out>/best_config.json   the best subnet found, a SubnetConfig (`export --config`)
    <out>/results.json       the top subnets with accuracy, arena, flash, MACs and the latency model's
                             instructions, and counts
    <out>/evolved_space.yaml with --evolve-space: the space the search ran in

KerasTuner keeps every trial in the project directory, so rerunning the same
command after an interruption (Ctrl-C or a kill) reloads the finished trials,
reruns the one that was under way and goes on to the asked total. In
KerasTuner's distributed mode (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`) the chief serves the oracle and the workers, each
with its own copy of the supernet, run trials; all share `<out>`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from keras_tuner.src.distribute import utils as dist_utils

from mcuformer_tf.board import latency
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.run_dir import RunDir, write_json_atomic
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from tuner.budget import Budget, format_size
from tuner.budget_oracle import make_oracle
from tuner.hyperparameters import config_from_values
from tuner.interrupts import remembered_interrupts
from tuner.tune_settings import TuneSettings

PROJECT = "search"
SPEC_FILE, BEST_FILE, RESULTS_FILE = "tune.json", "best_config.json", "results.json"
EVOLVED_FILE = "evolved_space.yaml"


@dataclasses.dataclass
class Ranked:
    """One finished trial: its subnet, accuracy and predicted memory."""

    config: SubnetConfig
    accuracy: float
    arena: int
    flash: int
    macs: int
    trial_id: str
    instructions: int  # the latency model's, of one inference of the fused model

    def to_dict(self) -> dict:
        return {"trial": self.trial_id, "search_accuracy": self.accuracy, "arena": self.arena,
                "flash": self.flash, "macs": self.macs, "instructions": self.instructions,
                "config": self.config.to_dict()}


@dataclasses.dataclass
class TuneResult:
    top: list[Ranked]
    finished: int
    checked: int
    rejected: int
    seconds: float
    eval_seconds: float
    check_seconds: float
    stop_reason: str | None
    project_dir: Path
    best_file: Path | None
    clock_hz: int  # the budget's: the top table's milliseconds


def _check_spec(out: Path, spec: dict) -> None:
    path = out / SPEC_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != spec:
            changed = sorted(k for k in set(saved) | set(spec) if saved.get(k) != spec.get(k))
            raise McuformerError(f"{out} holds a search with other settings ({', '.join(changed)} "
                                 "differ); rerun it as it was started or choose another --out")
    else:
        write_json_atomic(path, spec)


def _instructions(trial, config: SubnetConfig) -> int:
    """The trial's recorded latency estimate; the model's for a trial made before trials recorded it."""
    if trial.metrics.exists("instructions"):
        return int(trial.metrics.get_last_value("instructions"))
    return latency.instructions(config)


def ranked_trials(oracle, space: SearchSpace, count: int) -> list[Ranked]:
    """The `count` best finished trials, best first; equal accuracy goes to the smaller arena,
    then the fewer MACs, then the earlier trial, so a rerun names the same best subnet."""
    finished = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    ranked = []
    for t in finished:
        config = config_from_values(space, t.hyperparameters.values)
        ranked.append(Ranked(config, float(t.score),
                             *(int(t.metrics.get_last_value(m)) for m in ("arena", "flash", "macs")),
                             t.trial_id, _instructions(t, config)))
    return sorted(ranked, key=lambda r: (-r.accuracy, r.arena, r.macs, r.trial_id))[:count]


class Progress:
    """The live line: trials done, best accuracy so far, feasible and rejected candidates."""

    def __init__(self, oracle, total: int, enabled: bool):
        from tqdm.auto import tqdm

        done = sum(1 for t in oracle.trials.values() if t.status == "COMPLETED")
        self.oracle = oracle
        self.bar = tqdm(total=total, initial=done, unit="trial", disable=not enabled,
                        dynamic_ncols=True)
        self.refresh()

    def refresh(self, redraw: bool = True):
        if self.bar.disable:
            return
        trials = list(getattr(self.oracle, "trials", {}).values())
        scores = [t.score for t in trials if t.status == "COMPLETED" and t.score is not None]
        postfix = {"best": f"{max(scores):.2%}" if scores else "-", "feasible": len(trials)}
        if hasattr(self.oracle, "rejected"):
            postfix["rejected"] = self.oracle.rejected
        self.bar.set_postfix(postfix, refresh=redraw)

    def __call__(self, tuner, trial):
        self.refresh(redraw=False)
        self.bar.update(1)  # redraws at most every tqdm's mininterval

    def close(self):
        self.bar.close()


def _evolved(space, budget, scorer, out: Path, seed: int, log) -> SearchSpace:
    """The space moved by search-space evolution, evolved once per search directory."""
    from tuner.budget import check_space_fits
    from tuner.space_evolution import evolve_space

    path = out / EVOLVED_FILE
    if path.is_file():
        return SearchSpace.load(path)
    if scorer is None or dist_utils.has_chief_oracle():
        raise McuformerError(f"--evolve-space in a distributed search needs {path}: evolve the "
                             "space in a local run into this --out first")
    check_space_fits(space, budget)
    evolved, _ = evolve_space(space, budget, scorer, seed=seed, log=log)
    path.write_text(evolved.to_yaml())
    log(f"evolved space: rank ratio {list(evolved.rank_ratio)}, patch "
        f"{list(evolved.patch_size)} -> {path}")
    return evolved


def tune(run: RunDir, budget: Budget, out: Path, settings: TuneSettings,
         space: SearchSpace | None = None, progress: bool = True, top: int = 5,
         evolve_space: bool = False, log=print, scorer=None) -> TuneResult:
    """Search `space` (default: the run's) for the most accurate subnets within `budget`.

    `scorer` (a `SubnetScorer` of this run) saves loading the supernet again."""
    from mcuformer_tf.nas.data import load_data
    from mcuformer_tf.nas.training import load_supernet
    from tuner.subnet_tuner import SubnetScorer, SubnetTuner

    run_space = run.space()
    space = space or run_space
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, {"supernet": str(Path(run.path).resolve()), "budget": budget.to_dict(),
                      "space": space.to_dict(), "settings": settings.identity(),
                      "evolve_space": evolve_space})
    log(f"tune {run.path} on {budget.describe()}: {settings.algorithm}, {settings.trials} "
        f"trials -> {out} ({role()})")
    if scorer is None and not dist_utils.is_chief_oracle():
        scorer = SubnetScorer(load_supernet(run), load_data(run.spec()["data"],
                                                            max(run_space.image_size)),
                              settings.fine_tune_steps, seed=settings.seed)
    if evolve_space:
        space = _evolved(space, budget, scorer, out, settings.seed, log)
    oracle = make_oracle(settings.algorithm, space, budget, settings.trials, settings.seed,
                         **settings.evolution_options())
    began = time.perf_counter()
    tuner = SubnetTuner(oracle, scorer, space, directory=str(out), project_name=PROJECT,
                        overwrite=False)
    show = Progress(oracle, settings.trials, progress and not tuner._is_worker())
    tuner.on_trial_end_hook = show
    try:
        with remembered_interrupts() as tuner.interrupted:
            tuner.search(verbose=0)
    finally:
        show.close()
    seconds = time.perf_counter() - began
    result = TuneResult(
        top=[] if tuner._is_worker() else ranked_trials(oracle, space, top),
        finished=tuner.trials_run if tuner._is_worker() else sum(
            1 for t in oracle.trials.values() if t.status == "COMPLETED"),
        checked=getattr(oracle, "checked", 0), rejected=getattr(oracle, "rejected", 0),
        seconds=seconds, eval_seconds=tuner.eval_seconds,
        check_seconds=getattr(oracle, "check_seconds", 0.0),
        stop_reason=getattr(oracle, "stop_reason", None), project_dir=Path(tuner.project_dir),
        best_file=None, clock_hz=budget.clock)
    if result.top:
        result.best_file = out / BEST_FILE
        result.top[0].config.save(result.best_file)
        write_json_atomic(out / RESULTS_FILE, {
            "budget": budget.to_dict(), "algorithm": settings.algorithm,
            "finished": result.finished, "checked": result.checked,
            "rejected": result.rejected, "top": [r.to_dict() for r in result.top]})
    return result


def format_table(result: TuneResult) -> str:
    """The top subnets, one a line."""
    clock = f"ms@{result.clock_hz / 1e6:g}MHz"
    lines = [f"{'#':>2} {'search':>8} {'arena':>10} {'flash':>10} {'MMACs':>7} {clock:>13}  subnet"]
    for k, r in enumerate(result.top, 1):
        ms = r.instructions / result.clock_hz * 1e3
        lines.append(f"{k:>2} {r.accuracy:>8.2%} {format_size(r.arena):>10} "
                     f"{format_size(r.flash):>10} {r.macs / 1e6:>7.2f} {ms:>13,.1f}  {r.config.describe()}")
    return "\n".join(lines)


def role() -> str:
    """`chief`, `worker` or `local`: this process's part in a KerasTuner search."""
    if not dist_utils.has_chief_oracle():
        return "local"
    if dist_utils.is_chief_oracle():
        return "chief"
    return f"worker {os.environ['KERASTUNER_TUNER_ID']}"
