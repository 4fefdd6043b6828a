"""The offline plan of the unfused model is what TFLM runs: same outputs, and TFLM's head equals the
plan's size. (Fused models' plans: test_compiler_fuse and test_arena_executor.)"""
import random

import numpy as np
import pytest

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.pipeline import compile_model, match_pass, plan_pass
from mcuformer_tf.compiler.plan import ONLINE, offline_plan_metadata, pack, plan
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory import report as memory_report
from mcuformer_tf.memory.arena_search import run_trials
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN, PlannedBuffer
from mcuformer_tf.tflm.runtime import DEFAULT_ARENA, model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model

SEEDS = (0, 3)


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite):
    return [fresh_int8_tflite(digits_space.sample(random.Random(seed))).read_bytes()
            for seed in SEEDS]


def _tflm_head(raw: bytes, tmp_path) -> int:
    path = tmp_path / "planned.tflite"
    path.write_bytes(raw)
    (trial,) = run_trials(path, [DEFAULT_ARENA])
    assert trial.ok, trial.error
    return trial.non_persistent


def _same_outputs(original: bytes, planned: bytes) -> bool:
    inputs = model_inputs(read_model(original), seed=5)
    return all(np.array_equal(a, b) for a, b in zip(run_tflm(original, inputs),
                                                    run_tflm(planned, inputs)))


def _words(raw: bytes) -> np.ndarray:
    return np.frombuffer(read_model(raw).metadata[OFFLINE_PLAN], "<i4")


def test_pack_shares_in_place_offsets_and_shrinks_the_plan():
    def buffers():
        # tensors 0 -> 1 -> 2 through two operators, plus scratch of the second one
        return [PlannedBuffer(64, 0, 1, tensor=0), PlannedBuffer(48, 1, 2, tensor=1),
                PlannedBuffer(64, 2, 3, tensor=2), PlannedBuffer(16, 2, 2, operator=1)]

    apart = buffers()
    assert pack(apart) == 128
    chained = buffers()
    assert pack(chained, [(0, 1), (1, 2)]) == 80
    assert chained[0].offset == chained[1].offset == chained[2].offset
    assert chained[3].offset == 64  # scratch beside the shared buffer, which lives from 0 to 3
    assert all(b.offset % 16 == 0 for b in apart + chained)


def test_offline_plan_runs_in_tflm_with_its_predicted_head(models, tmp_path):
    for raw in models:
        compiled = compile_model(raw, passes=(match_pass, plan_pass))
        plan_ = compiled.plan
        words = _words(compiled.model_bytes)
        graph = read_model(compiled.model_bytes)
        assert list(words[:3]) == [1, 0, len(graph.tensors)]
        assert list(words[3:]) == plan_.offsets
        for tensor, offset in zip(graph.tensors, plan_.offsets):
            assert (offset == ONLINE) == tensor.is_constant
            assert offset % 16 == 0 or offset == ONLINE
        assert _same_outputs(raw, compiled.model_bytes)
        assert _tflm_head(compiled.model_bytes, tmp_path) == plan_.size
        assert plan_.size == memory_report.memory_report(compiled.model_bytes).peak
        assert plan_.size <= memory_report.memory_report(raw).peak


def _mark_safe_in_place(model) -> list:
    """Reference kernels that read each element before writing the same element may run in
    place: LOGISTIC, RESHAPE (TFLM skips its copy when the pointers match), and the residual ADD
    on its branch input. Marks those whose input nothing else reads; returns (input, output)."""
    readers = model.consumers()
    pairs = []
    for op in model.operators:
        position = None
        if op.opcode in ("LOGISTIC", "RESHAPE") and len(readers[op.inputs[0]]) == 1:
            position = 0
        elif op.opcode == "ADD" and not any(t.is_constant for t in op.inputs) and \
                op.inputs[1].nbytes == op.outputs[0].nbytes and len(readers[op.inputs[1]]) == 1:
            position = 1
        if position is not None and op.inputs[position] not in model.inputs:
            op.in_place = {0: position}
            pairs.append((op.inputs[position], op.outputs[0]))
    return pairs


def test_in_place_pairs_share_offsets_and_tflm_follows_them(models, tmp_path):
    raw = models[0]
    model = ir.read(raw)
    pairs = _mark_safe_in_place(model)
    assert len(pairs) > 10
    plan_ = plan(model)
    planned = ir.write(model)
    index = {t: i for i, t in enumerate(model.tensors)}
    for source, target in pairs:
        assert plan_.offsets[index[source]] == plan_.offsets[index[target]]
    assert _same_outputs(raw, planned)
    assert _tflm_head(planned, tmp_path) == plan_.size


def test_tflm_takes_its_offsets_from_the_metadata(models, tmp_path):
    """All activations at offset 0: if TFLM ignored the words, it would still compute right."""
    raw = models[1]
    graph = read_model(raw)
    model = ir.read(raw)
    model.metadata[OFFLINE_PLAN] = offline_plan_metadata(
        [ONLINE if t.is_constant else 0 for t in graph.tensors])
    clobbered = ir.write(model)
    largest = max(-(-t.nbytes // 16) * 16 for t in graph.tensors if not t.is_constant)
    head = _tflm_head(clobbered, tmp_path)
    assert head == memory_report.memory_report(clobbered).peak
    assert largest <= head < memory_report.memory_report(raw).peak
    assert not _same_outputs(raw, clobbered)


def test_unsound_in_place_and_unmodelled_scratch_are_refused(models):
    model = ir.read(models[0])
    centre = next(op for op in model.operators if op.opcode == "SUB")
    centre.in_place = {0: 0}  # the block input is read again by the residual ADD
    with pytest.raises(McuformerError, match="which is read after it"):
        plan(model)
    model = ir.read(models[0])
    head = model.operators[-1]
    model.replace_ops([head], [ir.Op.custom("MCUF_TEST", head.inputs, head.outputs, b"")])
    with pytest.raises(McuformerError, match=r"operator \d+ \(MCUF_TEST\): its scratch is not"):
        plan(model)


def test_compile_without_planning_writes_no_plan(models):
    compiled = compile_model(models[0], passes=(match_pass,))
    assert compiled.plan is None and len(compiled.blocks) > 3
    assert OFFLINE_PLAN not in read_model(compiled.model_bytes).metadata
