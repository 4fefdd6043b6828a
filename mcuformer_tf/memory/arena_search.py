"""The smallest arena with which stock TFLM allocates *and* invokes a model, found by trial.

TFLM given too small an arena may crash instead of failing (DESIGN.md §3), so
every trial runs in a child process (`python -m mcuformer_tf.memory.arena_search
MODEL ARENA`), and a crash reads as "too small". The search is cheap: one
trial with a generous arena (64 MiB) reads the usage TFLM's RecordingMicroAllocator
prints (`print_allocations`: total = head + tail), and two concurrent trials
at that total and 16 bytes below it (TFLM aligns to 16) usually settle the
minimum. Where they do not, TFLM needed temporary room while it planned: its
GreedyMemoryPlanner takes 40 bytes per planned buffer from the free arena, so
a model with small activations needs more than it finally uses. TFLM's
"Too many buffers (max is M)" and the buffer count of `arena_plan`'s plan
then predict the minimum; otherwise the search gallops, and it always ends
bisecting on the 16-byte grid. The answer carries the persistent (tail) and
non-persistent (head) parts as TFLM reports them for that very arena.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.compiler.unfuse import MCUF_SCRATCH
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arena_plan import ALIGNMENT, PLANNER_BYTES_PER_BUFFER, planned_buffers
from mcuformer_tf.tflm.runtime import DEFAULT_ARENA, native_stderr, tflm_interpreter, tflm_invoke
from mcuformer_tf.tflm.tflite_graph import read_model

GALLOP_STEP = 512  # bytes; the first stride when the reported usage is not the minimum
TRIAL_TIMEOUT = 600  # seconds; a trial is one allocation and one inference on the host
_TOO_MANY_BUFFERS = re.compile(r"Too many buffers \(max is (\d+)\)")
_USAGE = re.compile(r"\[RecordingMicroAllocator\] Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class Trial:
    arena: int
    ok: bool
    used: int = 0  # TFLM's total (head + tail) for this arena
    non_persistent: int = 0  # head
    persistent: int = 0  # tail
    error: str = ""


@dataclass(frozen=True)
class ArenaSize:
    """The smallest working arena and TFLM's own account of it."""

    arena: int  # bytes, a multiple of 16
    used: int  # what TFLM reports allocated with that arena
    persistent: int
    non_persistent: int
    failing: int  # the largest arena tried that failed (arena - 16 once settled)
    failure: str  # how TFLM failed with it
    trials: int  # child processes run


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _start(model_path: Path, arena: int) -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-m", "mcuformer_tf.memory.arena_search", str(model_path),
                             str(arena)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)


def _finish(process: subprocess.Popen, arena: int) -> Trial:
    try:
        out, err = process.communicate(timeout=TRIAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return Trial(arena, False, error=f"timed out after {TRIAL_TIMEOUT} s")
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        reason = (f"crashed (signal {-process.returncode})" if process.returncode < 0
                  else f"exited with {process.returncode}")
        last = err.strip().splitlines()[-1:] if err.strip() else []
        return Trial(arena, False, error=reason + (f": {last[0]}" if last else ""))
    return Trial(arena=arena, **json.loads(lines[-1]))


def run_trials(model_path: Path, arenas) -> list:
    """One child process per arena size, run concurrently; their Trials in the same order."""
    processes = [(_start(model_path, arena), arena) for arena in arenas]
    return [_finish(process, arena) for process, arena in processes]


def _next_arenas(passing: Trial, failing: Trial | None, probe: int, step: int,
                 buffer_count: int) -> list:
    """Two arenas to try next (one per core), strictly between the bounds, on the 16-byte grid."""
    if failing is None:  # gallop down: TFLM ran with less than it reported using
        return [a for a in (passing.arena - step, passing.arena - 2 * step) if a > 0]
    too_many = _TOO_MANY_BUFFERS.search(failing.error)
    if too_many:  # the planner's workspace held too few buffers: predict the arena that holds all
        low = _align(failing.arena + PLANNER_BYTES_PER_BUFFER * (
            buffer_count - int(too_many[1])) - PLANNER_BYTES_PER_BUFFER + 1)
        candidates = [low, low + ALIGNMENT] if passing.arena == probe else [low - ALIGNMENT, low]
    elif passing.arena == probe:  # gallop up: planning needs room the final plan gives back
        candidates = [failing.arena + step, failing.arena + 2 * step]
    else:
        candidates = []
    inside = sorted({a for a in candidates if failing.arena < a < passing.arena})
    if inside:
        return inside
    gap = passing.arena - failing.arena  # split the bracket in thirds
    thirds = (failing.arena + _align(gap // 3), failing.arena + _align(2 * gap // 3))
    return sorted({a for a in thirds if a < passing.arena})


def _search(model_path: Path) -> ArenaSize:
    buffer_count = len(planned_buffers(read_model(model_path), MCUF_SCRATCH))
    probe = DEFAULT_ARENA
    (first,) = run_trials(model_path, [probe])
    if not first.ok:
        raise McuformerError(f"TFLM does not run the model with a {probe >> 20} MiB arena: "
                             f"{first.error}")
    passing, failing, count = first, None, 1
    guess = _align(first.used)
    arenas, step = [a for a in (guess, guess - ALIGNMENT) if a > 0], GALLOP_STEP
    while arenas:
        for trial in run_trials(model_path, arenas):
            count += 1
            if trial.ok and trial.arena < passing.arena:
                passing = trial
            if not trial.ok and (failing is None or trial.arena > failing.arena):
                failing = trial
        arenas = _next_arenas(passing, failing, probe, step, buffer_count)
        step *= 4
    if failing is None:
        failing = Trial(0, False, error="an empty arena")
    return ArenaSize(passing.arena, passing.used, passing.persistent, passing.non_persistent,
                     failing.arena, failing.error, count)


def find_arena(model) -> ArenaSize:
    """The smallest arena (a multiple of 16 bytes) with which stock TFLM allocates and invokes.

    `model` is a .tflite path or its bytes; check it first (`tflm_runtime.check_stock_model`).
    """
    if isinstance(model, (str, Path)):
        return _search(Path(model))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(bytes(model))
        return _search(path)


def _trial_in_this_process(model_path: str, arena: int) -> dict:
    """Allocate and invoke with zero inputs; TFLM's usage report, or its error."""
    model_bytes = Path(model_path).read_bytes()
    subgraph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    try:
        interpreter = tflm_interpreter(model_bytes, arena)
        details = [interpreter.get_input_details(i) for i in range(subgraph.InputsLength())]
        tflm_invoke(interpreter, [np.zeros(d["shape"], d["dtype"]) for d in details],
                    subgraph.OutputsLength())
    except McuformerError as err:
        return {"ok": False, "error": str(err)}
    with native_stderr() as captured:
        interpreter.print_allocations()
    usage = {name: int(value) for name, value in _USAGE.findall(captured[0])}
    return {"ok": True, "used": usage["total"], "non_persistent": usage["head"],
            "persistent": usage["tail"]}


if __name__ == "__main__":
    print(json.dumps(_trial_in_this_process(sys.argv[1], int(sys.argv[2]))), flush=True)
