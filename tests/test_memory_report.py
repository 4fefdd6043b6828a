"""The memory report's arena plan is TFLM's: its peak equals the head TFLM reports, per model."""
import random

import numpy as np
import pytest
from PIL import Image

from mcuformer_tf.memory.arena_search import run_trials
from mcuformer_tf.memory.report import format_report, memory_report, plot_arena
from mcuformer_tf.tflm.arena_plan import PlannedBuffer, greedy_plan, planned_buffers
from mcuformer_tf.tflm.runtime import DEFAULT_ARENA
from mcuformer_tf.tflm.tflite_graph import read_model


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite):
    """Three digits subnets of different patch size and depth, as int8 .tflite files."""
    configs = [digits_space.sample(random.Random(0)), digits_space.sample(random.Random(1)),
               digits_space.smallest()]
    assert {c.patch_size for c in configs} == {4, 8}
    return [fresh_int8_tflite(config) for config in configs]


def test_the_peak_is_the_head_tflm_reports(models):
    trials = run_trials(models[0], [DEFAULT_ARENA])  # one child at a time keeps the CPU for others
    for path in models[1:]:
        trials += run_trials(path, [DEFAULT_ARENA])
    for path, trial in zip(models, trials):
        report = memory_report(path)
        assert trial.ok
        assert report.peak == trial.non_persistent, path.name
        assert report.most_alive <= report.peak


def test_greedy_plan_reproduces_tflm_planner_tests():
    # tensorflow/lite/micro/memory_planner/greedy_memory_planner_test.cc: TestGreedyMedium
    buffers = [PlannedBuffer(size, first, last) for size, first, last in
               ((10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1))]
    assert greedy_plan(buffers) == 90
    assert [b.offset for b in buffers] == [50, 70, 40, 0, 0]
    # ... TestOverlapCase
    buffers = [PlannedBuffer(100, 0, 1), PlannedBuffer(50, 2, 3), PlannedBuffer(20, 1, 2)]
    assert greedy_plan(buffers) == 120


def test_offline_offsets_are_kept_and_the_rest_planned_around_them():
    buffers = [PlannedBuffer(32, 0, 2, offline_offset=64), PlannedBuffer(80, 1, 1),
               PlannedBuffer(16, 0, 0, offline_offset=0), PlannedBuffer(64, 2, 3)]
    # 64 bytes fit below the offline buffer at 64; 80 do not and go above it.
    assert greedy_plan(buffers) == 176
    assert [b.offset for b in buffers] == [64, 96, 0, 0]


def test_lifetimes_scratch_and_per_operator_view(models):
    report = memory_report(models[0])
    graph = report.graph
    by_tensor = {b.tensor: b for b in report.buffers if b.tensor is not None}
    assert by_tensor[graph.inputs[0]].first == 0
    assert by_tensor[graph.outputs[0]].last == len(graph.operators)
    for op, view in zip(graph.operators, report.operators):
        activations = {i for i in op.inputs + op.outputs
                       if i >= 0 and not graph.tensors[i].is_constant}
        assert activations <= set(view.live)
        assert view.live_bytes == sum(by_tensor[i].size for i in view.live)
        assert view.top <= report.peak
    mean = next(op for op in graph.operators if op.opcode == "MEAN")
    x, axis, out = (graph.tensors[i] for i in (mean.inputs[0], mean.inputs[1], mean.outputs[0]))
    # reduce_common.cc: an int32 accumulator per output, the input's iterator, the resolved axes.
    sizes = [-(-n // 16) * 16 for n in (4 * int(np.prod(out.shape)), 4 * len(x.shape),
                                       4 * int(np.prod(axis.shape)))]
    assert report.operators[mean.index].scratch == sum(sizes)
    assert sorted(b.size for b in report.buffers if b.operator == mean.index) == sorted(sizes)
    peak_view = report.operators[report.peak_operator]
    assert peak_view.live_bytes + peak_view.scratch == report.most_alive


def test_flash_split_adds_up_to_the_file_and_counts_shared_constants_once(models):
    raw = models[1].read_bytes()
    graph = read_model(raw)
    flash = memory_report(models[1]).flash
    assert flash.total == len(raw)
    weights = sum(graph.tensors[op.inputs[1]].nbytes for op in graph.operators
                  if op.opcode in ("CONV_2D", "FULLY_CONNECTED"))
    biases = sum(graph.tensors[op.inputs[2]].nbytes for op in graph.operators
                 if op.opcode in ("CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 2
                 and op.inputs[2] >= 0)
    assert flash.weights == weights and flash.biases == biases
    assert 0 < flash.other_constants == graph.buffer_bytes - weights - biases  # shared: once
    assert graph.buffer_bytes < sum(t.nbytes for t in graph.tensors if t.is_constant)
    assert 0 < flash.quantization + flash.names < flash.structure
    assert flash.metadata > 0


def test_text_and_png(models, tmp_path):
    report = memory_report(models[2])
    text = format_report(report)
    op = report.operators[report.peak_operator]
    assert f"non-persistent arena (TFLM's head): {report.peak:,} B" in text
    assert f"set by operator {op.index} ({op.opcode}) with {report.most_alive:,} B alive" in text
    assert text.count("<- most alive") == 1
    assert f"flash (the .tflite): {report.flash.total:,} B" in text
    plot_arena(report, tmp_path / "arena.png")
    with Image.open(tmp_path / "arena.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 300


def test_planned_buffers_skip_constants_and_empty_tensors(models):
    graph = read_model(models[2])
    planned = {b.tensor for b in planned_buffers(graph) if b.tensor is not None}
    assert planned == {t.index for t in graph.tensors if not t.is_constant and t.nbytes > 0}


def test_an_offline_plan_in_the_metadata_is_followed_as_tflm_follows_it(models, tmp_path):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    raw = models[2].read_bytes()
    online = memory_report(raw)
    offsets = np.full(len(online.graph.tensors), -1, np.int32)
    for b in online.buffers:
        if b.tensor is not None:
            offsets[b.tensor] = b.offset
    output = online.graph.outputs[0]
    offsets[output] = online.peak  # the output moved above everything else
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    buffer = schema.BufferT()
    buffer.data = np.concatenate([[1, 0, offsets.size], offsets]).astype(np.int32).view(np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "OfflineMemoryAllocation", len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "offline.tflite"
    path.write_bytes(bytes(builder.Output()))

    report = memory_report(path)
    planned = {b.tensor: b for b in report.buffers if b.tensor is not None}
    assert planned[output].offset == online.peak
    assert report.peak == online.peak + planned[output].size
    (trial,) = run_trials(path, [DEFAULT_ARENA])
    assert trial.ok and trial.non_persistent == report.peak
