"""Packed INT4 weights (issue 19): TFLM's layout, the compiler's packer, and the fundamental
equivalence: an int8 model whose filters are on a 4-bit grid and the same model with those filters
packed into INT4 give the same output bytes in stock TFLM, and the numpy TFLM arithmetic and arena
plan follow the packed model."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from cli_runner import run_cli
from supernets import on_int4_grid

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.int4_weights import int4_filters, pack_int4_model
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.arena_search import run_trials
from mcuformer_tf.memory.report import memory_report
from mcuformer_tf.tflm.arena_plan import planned_buffers
from mcuformer_tf.tflm.arith import run_graph
from mcuformer_tf.tflm.int4 import pack_int4, unpack_int4
from mcuformer_tf.tflm.runtime import DEFAULT_ARENA, model_inputs, run_tflm, tflm_interpreter, tflm_invoke
from mcuformer_tf.tflm.tflite_graph import read_model

SEEDS = (0, 4)  # as test_compiler_fuse's perturbed subnets: converted once per session
INPUTS = 10


def test_the_layout_is_low_nibble_first_and_pads_an_odd_count():
    assert pack_int4([1, -2, 3]) == bytes([0xE1, 0x03])
    assert pack_int4([-8, 7, 0, -1]) == bytes([0x78, 0xF0])
    values = np.random.default_rng(0).integers(-8, 8, (5, 3, 3), dtype=np.int8)
    assert np.array_equal(unpack_int4(pack_int4(values), values.shape), values)
    with pytest.raises(ValueError, match="outside"):
        pack_int4([8])


@pytest.fixture(scope="module")
def models(digits_space, perturbed_int8_tflite):
    """[(on-grid int8 model, its packed twin)] for digits subnets of a perturbed supernet."""
    grids = [on_int4_grid(perturbed_int8_tflite(digits_space.sample(random.Random(seed))).read_bytes())
             for seed in SEEDS]
    return [(grid, pack_int4_model(grid)) for grid in grids]


def test_every_filter_is_packed_and_keeps_its_values(models):
    for grid, packed in models:
        unpacked_graph, packed_graph = read_model(grid), read_model(packed)
        filters = int4_filters(ir.read(packed))
        assert filters and all(weights.int4 for _, weights in filters)
        names = {weights.name for _, weights in filters}
        halved = 0
        for before, after in zip(unpacked_graph.tensors, packed_graph.tensors):
            assert after.int4 == (after.name in names)
            if after.is_constant:
                assert np.array_equal(before.data, after.data)
                assert (before.quantization is None) == (after.quantization is None)
                assert after.quantization is None or np.array_equal(before.quantization.scale,
                                                                    after.quantization.scale)
            if after.int4:
                assert after.nbytes == (before.nbytes + 1) // 2
                halved += before.nbytes - after.nbytes
        assert unpacked_graph.buffer_bytes - packed_graph.buffer_bytes == halved > 0
        assert memory_report(grid).flash.weights - memory_report(packed).flash.weights == halved
        assert pack_int4_model(packed) == packed  # already INT4: nothing left to pack


def test_stock_tflm_gives_the_same_bytes_packed_or_not_and_numpy_follows(models):
    for seed, (grid, packed) in zip(SEEDS, models):
        graph = read_model(packed)
        unpacked_tflm = tflm_interpreter(grid, DEFAULT_ARENA)
        packed_tflm = tflm_interpreter(packed, DEFAULT_ARENA)
        rng = np.random.default_rng(seed)
        for _ in range(INPUTS):
            x = rng.integers(-128, 128, graph.tensor(graph.inputs[0]).shape, dtype=np.int8)
            (expected,) = tflm_invoke(unpacked_tflm, [x], 1)
            (actual,) = tflm_invoke(packed_tflm, [x], 1)
            assert actual.tobytes() == expected.tobytes()
            assert run_graph(graph, [x])[graph.outputs[0]].tobytes() == actual.tobytes()


def test_the_arena_plan_counts_the_unpacked_filter_scratch(models, tmp_path):
    for grid, packed in models:
        graph = read_model(packed)
        filter_ops = [op for op in graph.operators if op.opcode in ("FULLY_CONNECTED", "CONV_2D")]
        scratch = [(b.operator, b.size) for b in planned_buffers(graph)
                   if b.tensor is None and graph.operators[b.operator] in filter_ops]
        assert scratch == [(op.index, -(-int(np.prod(graph.tensor(op.inputs[1]).shape)) // 16) * 16)
                           for op in filter_ops]
        path = tmp_path / "packed.tflite"
        path.write_bytes(packed)
        (trial,) = run_trials(path, [DEFAULT_ARENA])
        assert trial.ok, trial.error
        assert memory_report(packed).peak == trial.non_persistent >= memory_report(grid).peak


def test_a_filter_off_the_grid_or_per_channel_in_a_linear_layer_is_refused(digits_space, perturbed_int8_tflite):
    raw = perturbed_int8_tflite(digits_space.sample(random.Random(SEEDS[0]))).read_bytes()
    with pytest.raises(McuformerError, match=r"^CONV_2D filter '.*' cannot be packed into INT4: values up "
                                             r"to ±\d+, off the 4-bit grid \[-7, 7\]$"):
        pack_int4_model(raw)
    model = ir.read(raw)
    for _, weights in int4_filters(model):
        weights.buffer = ir.Buffer(np.clip(weights.data, -7, 7).astype(np.int8).tobytes())
    with pytest.raises(McuformerError, match=r"^FULLY_CONNECTED filter '.*' cannot be packed into INT4: "
                                             r"per-channel scales"):
        pack_int4_model(ir.write(model))


def test_compile_fuses_blocks_with_int4_weights_and_keeps_them_packed(models):
    from mcuformer_tf.compiler.arena_executor import run_planned

    grid, packed = models[0]
    compiled = compile_model(packed)
    assert [code for _, code in compiled.fusion.fused][:3] == ["MCUF_PATCH_EMBED", "MCUF_ATTENTION", "MCUF_MLP"]
    assert {reason for _, reason in compiled.fusion.kept} == {"no MCUF kernel for head blocks"}
    fused_graph = read_model(compiled.model_bytes)
    assert sorted((t.name, t.nbytes) for t in fused_graph.tensors if t.int4) == \
        sorted((t.name, t.nbytes) for t in read_model(packed).tensors if t.int4)
    assert len(compile_model(grid).model_bytes) - len(compiled.model_bytes) >= \
        read_model(grid).buffer_bytes - read_model(packed).buffer_bytes - 16 * len(int4_filters(ir.read(packed)))
    for seed in (3, 4):
        x = model_inputs(read_model(packed), seed=seed)
        assert run_planned(compiled.model_bytes, x)[0].tobytes() == run_tflm(grid, x)[0].tobytes()


@pytest.mark.slow  # a minute: the export's calibration, conversion and val runs in TFLM
def test_export_with_4_bit_weights_writes_every_filter_as_int4(trained_run, tmp_path):
    model = tmp_path / "int4.tflite"
    result = run_cli("export", "--supernet", trained_run.path, "--config", "smallest", "--qat-epochs", 0,
                     "--weight-bits", 4, "-o", model)
    assert result.exit_code == 0, result.output
    assert ", 4-bit weights" in result.output
    assert re.search(r"int8 \(INT4 weights\) in TFLM [\d.]+%", result.output), result.output
    graph = read_model(model)
    filters = [graph.tensor(op.inputs[1]) for op in graph.operators if op.opcode in ("FULLY_CONNECTED", "CONV_2D")]
    assert filters and all(t.int4 and int(np.abs(t.data).max()) <= 7 for t in filters)
    assert all(not t.quantization.per_channel for op, t in zip(graph.operators, filters)
               if op.opcode == "FULLY_CONNECTED")
    assert memory_report(model.read_bytes()).flash.weights == sum(t.nbytes for t in filters)


@pytest.mark.slow  # a supernet, a QAT model and its conversion: a minute or two
def test_the_converter_writes_4_bit_qat_kernels_as_int4_and_numpy_follows_the_wheel(digits_space):
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize.convert import to_int8_tflite
    from mcuformer_tf.quantize.first_blocks import perturbed_supernet
    from mcuformer_tf.quantize.qat import quantize_subnet

    config = digits_space.sample(random.Random(SEEDS[0]))
    qat = quantize_subnet(extract_subnet(perturbed_supernet(digits_space, 0.05), config), weight_bits=4)
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    qat(images, training=True)  # each activation range starts from this batch's
    raw = to_int8_tflite(qat, images)
    graph = read_model(raw)
    filters = [(op, graph.tensor(op.inputs[1])) for op in graph.operators
               if op.opcode in ("FULLY_CONNECTED", "CONV_2D")]
    assert filters and all(t.int4 and int(np.abs(t.data).max()) == 7 for _, t in filters)
    assert {(op.opcode, t.quantization.per_channel) for op, t in filters} == {
        ("FULLY_CONNECTED", False), ("CONV_2D", True)}
    assert pack_int4_model(raw) == ir.write(ir.read(raw))  # nothing left for the packer
    interpreter = tflm_interpreter(raw, DEFAULT_ARENA)
    for x in model_inputs(graph, seed=1) + model_inputs(graph, seed=2):
        (expected,) = tflm_invoke(interpreter, [x], 1)
        assert run_graph(graph, [x])[graph.outputs[0]].tobytes() == expected.tobytes()


def test_the_latency_estimate_reads_int4_models_and_counts_their_loops(models):
    from mcuformer_tf.board import latency
    from mcuformer_tf.board.latency_shape import model_shape

    grid, packed = models[0]
    (shape, form), (packed_shape, packed_form) = model_shape(grid), model_shape(packed)
    assert packed_shape == shape and form.weight_bits == 8 and packed_form == form._replace(weight_bits=4)
    int8, int4 = latency.shape_instructions(shape, form), latency.shape_instructions(packed_shape, packed_form)
    extra = {kind: latency.instructions_of(kind, latency.features(packed_shape, packed_form)[kind]) -
             latency.instructions_of(kind, latency.features(shape, form)[kind]) for kind in latency.KINDS}
    assert int4 - int8 == pytest.approx(sum(extra.values()), abs=1)
    # the fitted INT4 loops are slower per MAC in every kernel with weights (bench_cortex_m7.py
    # --paper: INT4 / int8 MAC/instr 0.90-0.97), and the head's filter is unpacked at every Invoke
    assert all(extra[kind] > 0 for kind in latency.KINDS) and 1.02 < int4 / int8 < 1.2


def test_a_4_bit_linear_kernel_takes_the_clip_with_the_least_error():
    """max|w| of a kernel with one outlier leaves most of the 15 levels empty: the range kept is the
    clip whose grid is closest to the kernel, and inference uses it as stored. 8-bit kernels and
    the per-channel patch embedding keep tfmot's max|w| (LastValueQuantizer)."""
    import tensorflow as tf
    import tf_keras as keras

    from mcuformer_tf.quantize.qat import CLIP_FRACTIONS, ClippedKernelQuantizer, KernelQuantizeConfig, quantizers

    kernel = np.random.default_rng(0).normal(0, 0.02, (64, 48)).astype(np.float32)
    kernel[0, 0] = 0.2
    layer = keras.layers.Dense(1)
    layer.build((None, 1))
    quantizer = ClippedKernelQuantizer(4)
    ranges = quantizer.build(kernel.shape, "kernel", layer)
    fake = quantizer(tf.constant(kernel), True, ranges).numpy()
    clip = float(ranges["max_var"].numpy())
    assert float(ranges["min_var"].numpy()) == -clip and clip < 0.5 * 0.2

    def error(c):
        step = c / 7
        return float(np.mean((np.clip(np.round(kernel / step), -7, 7) * step - kernel) ** 2))

    assert np.isclose(np.mean((fake - kernel) ** 2), error(clip), rtol=1e-3)
    assert error(clip) <= min(error(f * 0.2) for f in CLIP_FRACTIONS) * (1 + 1e-4)
    assert error(clip) < error(0.2) / 4
    assert np.array_equal(quantizer(tf.constant(kernel), False, ranges).numpy(), fake)
    kinds = {(per_axis, bits): type(KernelQuantizeConfig(per_axis, bits).get_weights_and_quantizers(layer)[0][1])
             for per_axis in (False, True) for bits in (8, 4)}
    last_value = quantizers.LastValueQuantizer
    assert kinds == {(False, 4): ClippedKernelQuantizer, (False, 8): last_value, (True, 4): last_value,
                     (True, 8): last_value}
