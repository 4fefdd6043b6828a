"""The arena search finds TFLM's own minimum: the model runs with it, fails with 16 bytes less."""
import random
import subprocess
import sys

import numpy as np
import pytest

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.arena_search import ALIGNMENT, _finish, find_arena, run_trials
from mcuformer_tf.memory.estimate import memory_of
from mcuformer_tf.memory.form import FRESH_FLOAT
from mcuformer_tf.tflm.arena_plan import PERSISTENT_AFTER_PLANNING
from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite):
    """Two digits subnets as int8 .tflite files: patch 4 (64 tokens) and patch 8 (16 tokens)."""
    return {"p4": fresh_int8_tflite(digits_space.sample(random.Random(2))),
            "p8": fresh_int8_tflite(digits_space.smallest())}


def _planning_arena(config, size) -> int:
    """The arena the memory model says TFLM needs to plan, beside the measured persistent tail."""
    planning = memory_of(config, FRESH_FLOAT).unfused.planning
    return -(-(size.persistent - PERSISTENT_AFTER_PLANNING + planning) // ALIGNMENT) * ALIGNMENT


def test_the_arena_is_what_tflm_reports_and_16_bytes_less_fails(models, digits_space):
    path = models["p4"]
    size = find_arena(path)
    assert size.arena % ALIGNMENT == 0
    assert size.arena == size.used == size.persistent + size.non_persistent
    assert _planning_arena(digits_space.sample(random.Random(2)), size) < size.arena
    assert size.failing == size.arena - ALIGNMENT
    assert size.trials <= 5
    # Checked again in fresh processes, and the model computes with exactly that arena.
    at, below = run_trials(path, [size.arena, size.arena - ALIGNMENT])
    assert at.ok and (at.used, at.persistent, at.non_persistent) == (
        size.used, size.persistent, size.non_persistent)
    assert not below.ok and "TFLM failed to allocate tensors" in below.error
    raw = path.read_bytes()
    inputs = model_inputs(read_model(raw), seed=1)
    np.testing.assert_array_equal(run_tflm(raw, inputs, size.arena)[0], run_tflm(raw, inputs)[0])


def test_planning_room_beyond_the_final_usage_is_found(models, digits_space):
    """With few tokens TFLM's planner workspace (40 B a buffer) outgrows the plan it returns;
    the memory model's planning bytes give the arena exactly."""
    size = find_arena(models["p8"].read_bytes())
    assert size.arena > size.used == size.persistent + size.non_persistent
    assert size.arena == _planning_arena(digits_space.smallest(), size)
    assert size.failing == size.arena - ALIGNMENT
    assert "Too many buffers" in size.failure
    assert size.trials <= 8
    (below,) = run_trials(models["p8"], [size.arena - ALIGNMENT])
    assert not below.ok


def test_a_crashing_trial_reads_as_too_small():
    process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), "
                                "signal.SIGSEGV)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    trial = _finish(process, 1024)
    assert not trial.ok and trial.arena == 1024 and trial.error.startswith("crashed (signal 11)")


def test_a_model_tflm_cannot_run_is_one_error(tmp_path, models):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(models["p4"].read_bytes(), 0)
    for code in model.operatorCodes:  # LOGISTIC becomes GELU, which stock TFLM does not register
        if code.builtinCode == schema.BuiltinOperator.LOGISTIC:
            code.builtinCode = schema.BuiltinOperator.GELU
            code.deprecatedBuiltinCode = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "gelu.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(McuformerError, match=r"^TFLM does not run the model with a 64 MiB arena: "
                                             r".+Didn't find op for builtin opcode 'GELU'"):
        find_arena(path)
