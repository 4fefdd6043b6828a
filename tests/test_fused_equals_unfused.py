"""Fused = unfused, per preset: random subnets x random inputs, the arena executor's output
bytes on the compiled (fused, planned) model equal the stock TFLM wheel's on the exported one;
with TFLM_ROOT, the host runner (real TFLM, our glue) on the fused model equals the same TFLM on
the unfused model.

digits: the 10 subnets of the trained supernet (`digits_int8_models`) and more from a perturbed
fresh supernet (LayerNorm gamma/beta and biases kept), whole depth.
deit-tiny-mcu: random configs from a perturbed fresh supernet, each keeping its first block only
(one conversion of a 12-14-block model costs 15 s and one inference 1 s); the whole depth in
`make test-all` (slow). `make test-all` runs 20 subnets x 20 inputs per preset; `make test` runs
12 digits subnets and the 8 deit-tiny-mcu seeds that cover every image size, patch size and
width of the space, 8 inputs each. Conversions and runs are shared by two processes. The
deit-tiny-mcu exports also hold the memory model to them.

With INT4 weights (issue 19): each model's filters requantised onto the 4-bit grid and packed
(`supernets.on_int4_grid`, `pack_int4_model`), so the fused operators read packed INT4 filters,
which stay packed in the fused model. `make test` runs the 8 deit-tiny-mcu first blocks above so
packed (their host-runner check on 2 inputs each); `make test-all` 20 subnets x 20 inputs per
preset, the host runner on the digits ones too.
"""
import dataclasses
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np
import pytest

from mcuformer_tf.tflm import host_runner

SUBNETS = 20  # make test-all
INPUTS = 20  # make test-all
QUICK_DIGITS_PERTURBED = 2  # make test: beside the 10 trained subnets
QUICK_DEIT_SEEDS = (0, 1, 2, 3, 5, 7, 14, 19)  # make test: every (image, patch) pair and width
QUICK_INPUTS = 8  # make test
INT4_HOST_INPUTS = 2  # make test: the host runner on the packed deit-tiny-mcu first blocks
DEIT_PAIRS = {(224, 16), (224, 28), (224, 32), (240, 16), (240, 20), (240, 24)}


class Case(NamedTuple):
    config: object  # the SubnetConfig
    unfused: bytes  # the exported int8 .tflite
    fused: bytes  # compile_model(unfused)
    wrong: list  # input seeds on which the executor (fused) and the wheel (unfused) differ


def _case(config, unfused: bytes, inputs: int) -> Case:
    """Compiles `unfused` and runs both models on `inputs` random inputs (seeds 0, 1, ...)."""
    from mcuformer_tf.compiler.arena_executor import Arena
    from mcuformer_tf.compiler.pipeline import compile_model
    from mcuformer_tf.tflm.runtime import model_inputs, tflm_interpreter, tflm_invoke
    from mcuformer_tf.tflm.tflite_graph import read_model

    graph = read_model(unfused)
    fused = compile_model(unfused).model_bytes
    arena = Arena(read_model(fused))
    assert any(op.is_custom for op in arena.graph.operators), config.describe()
    wheel = tflm_interpreter(unfused, 1 << 24)
    wrong = []
    for seed in range(inputs):
        tensors = model_inputs(graph, seed)
        expected = tflm_invoke(wheel, tensors, len(graph.outputs))
        if not all(np.array_equal(a, b) for a, b in zip(arena.run(tensors), expected)):
            wrong.append(seed)
    return Case(config, unfused, fused, wrong)


def _int4(unfused: bytes) -> bytes:
    """The model with every filter requantised onto the 4-bit grid and packed into INT4."""
    from supernets import on_int4_grid

    from mcuformer_tf.compiler.int4_weights import pack_int4_model

    return pack_int4_model(on_int4_grid(unfused))


def _configs(preset: str, seeds, first_block_only: bool) -> list:
    from mcuformer_tf.nas.search_space import SearchSpace

    space = SearchSpace.load(preset)
    configs = [space.sample(random.Random(seed)) for seed in seeds]
    if first_block_only:
        configs = [dataclasses.replace(c, depth=1, num_heads=c.num_heads[:1],
                                       mlp_ratio=c.mlp_ratio[:1]) for c in configs]
    return configs


def _perturbed_cases(preset: str, seeds, first_block_only: bool, inputs: int, int4: bool) -> list:
    """Cases of subnets of a perturbed fresh supernet, packed into INT4 with `int4` (run in a child
    process)."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.quantize.first_blocks import converted_model, perturbed_supernet

    supernet = perturbed_supernet(SearchSpace.load(preset))
    models = ((config, converted_model(supernet, config)) for config in _configs(preset, seeds, first_block_only))
    return [_case(config, _int4(model) if int4 else model, inputs) for config, model in models]


def _in_two_processes(preset: str, seeds: list, first_block_only: bool, parts: int,
                      inputs: int, int4: bool = False) -> list:
    """_perturbed_cases over `seeds` split in `parts` jobs for two spawned processes."""
    jobs = [(preset, seeds[i::parts], first_block_only, inputs, int4) for i in range(parts)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [case for part in pool.map(_perturbed_cases, *zip(*jobs)) for case in part]


def _digits_cases(trained_models, perturbed: int, inputs: int, int4: bool = False) -> list:
    trained = [_case(config, _int4(data) if int4 else data, inputs) for config, data in trained_models]
    return trained + _in_two_processes("digits", list(range(100, 100 + perturbed)), False, 2, inputs, int4)


def _deit_first_block_cases(seeds: list, inputs: int, int4: bool = False) -> list:
    configs = _configs("deit-tiny-mcu", seeds, True)
    assert {(c.image_size, c.patch_size) for c in configs} == DEIT_PAIRS
    cases = _in_two_processes("deit-tiny-mcu", seeds, True, 4, inputs, int4)
    assert sorted(c.config.describe() for c in cases) == sorted(c.describe() for c in configs)
    return cases


@pytest.fixture(scope="module")
def digits_cases(digits_int8_models):
    return _digits_cases(digits_int8_models, QUICK_DIGITS_PERTURBED, QUICK_INPUTS)


@pytest.fixture(scope="module")
def deit_first_block_cases():
    return _deit_first_block_cases(list(QUICK_DEIT_SEEDS), QUICK_INPUTS)


@pytest.fixture(scope="module")
def deit_first_block_int4_cases(deit_first_block_cases):
    """The quick deit-tiny-mcu first blocks packed into INT4 (no conversion of their own)."""
    return [_case(case.config, _int4(case.unfused), QUICK_INPUTS) for case in deit_first_block_cases]


def _wrong(cases) -> list:
    return [(case.config.describe(), case.wrong) for case in cases if case.wrong]


def _int4_not_kept(cases) -> list:
    """Cases whose fused model does not hold every filter of the unfused model as the same packed INT4
    tensor (the MCUF operators' inputs and the head's)."""
    from mcuformer_tf.tflm.tflite_graph import read_model

    def packed(model):
        return sorted((t.name, t.nbytes) for t in read_model(model).tensors if t.int4)

    misses = []
    for case in cases:
        graph = read_model(case.unfused)
        filters = {op.inputs[1] for op in graph.operators if op.opcode in ("FULLY_CONNECTED", "CONV_2D")}
        if len(packed(case.unfused)) != len(filters) or packed(case.fused) != packed(case.unfused):
            misses.append(case.config.describe())
    return misses


def _memory_model_misses(cases) -> list:
    """Cases (float-form exports) whose memory model differs from the export and its compiled
    model: non-persistent plans and counts exact, fused flash within the fit (the whole check of
    test_memory_model, on these deit-tiny-mcu exports)."""
    from test_memory_model import FUSED_FLASH_TOLERANCE, _real_counts, _real_fused_counts

    from mcuformer_tf.memory import report as memory_report
    from mcuformer_tf.memory.counts import fused_graph_counts, graph_counts
    from mcuformer_tf.memory.estimate import memory_of
    from mcuformer_tf.memory.form import FLOAT
    from mcuformer_tf.tflm.tflite_graph import read_model

    misses = []
    for case in cases:
        config, graph = case.config, read_model(case.unfused)
        estimate = memory_of(config, FLOAT)
        counts = fused_graph_counts(config, FLOAT)
        fused = memory_report.memory_report(case.fused).peak
        if (estimate.unfused.non_persistent != memory_report.memory_report(case.unfused).peak
                or graph_counts(config, FLOAT) != _real_counts(graph, case.unfused)
                or estimate.fused.non_persistent != fused
                or {name: getattr(counts, name) for name in ("tensors", "operators", "data",
                                                            "quantized", "options")}
                != _real_fused_counts(case.fused)
                or abs(estimate.fused.flash - len(case.fused)) > FUSED_FLASH_TOLERANCE):
            misses.append(config.describe())
    return misses


def test_digits_fused_equals_unfused(digits_cases):
    assert len(digits_cases) == 10 + QUICK_DIGITS_PERTURBED
    assert _wrong(digits_cases) == []


def test_deit_first_blocks_fused_equal_unfused(deit_first_block_cases):
    assert len(deit_first_block_cases) == len(QUICK_DEIT_SEEDS)
    assert _wrong(deit_first_block_cases) == []
    assert _memory_model_misses(deit_first_block_cases) == []


def test_deit_first_blocks_fused_equal_unfused_with_int4_weights(deit_first_block_int4_cases):
    assert len(deit_first_block_int4_cases) == len(QUICK_DEIT_SEEDS)
    assert _wrong(deit_first_block_int4_cases) == []
    assert _int4_not_kept(deit_first_block_int4_cases) == []


@pytest.fixture(scope="module")
def digits_int4_cases(digits_int8_models):
    return _digits_cases(digits_int8_models, SUBNETS - len(digits_int8_models), INPUTS, int4=True)


@pytest.mark.slow
def test_twenty_digits_subnets_fused_equal_unfused_with_int4_weights(digits_int4_cases):
    assert len(digits_int4_cases) == SUBNETS
    assert _wrong(digits_int4_cases) == []
    assert _int4_not_kept(digits_int4_cases) == []


@pytest.mark.slow
def test_twenty_deit_first_blocks_fused_equal_unfused_with_int4_weights():
    cases = _deit_first_block_cases(list(range(SUBNETS)), INPUTS, int4=True)
    assert len(cases) == SUBNETS
    assert _wrong(cases) == []
    assert _int4_not_kept(cases) == []


@pytest.mark.slow
def test_twenty_digits_subnets_fused_equal_unfused_on_twenty_inputs(digits_int8_models):
    cases = _digits_cases(digits_int8_models, SUBNETS - len(digits_int8_models), INPUTS)
    assert len(cases) == SUBNETS
    assert _wrong(cases) == []


@pytest.mark.slow
def test_twenty_deit_first_blocks_fused_equal_unfused_on_twenty_inputs():
    cases = _deit_first_block_cases(list(range(SUBNETS)), INPUTS)
    assert len(cases) == SUBNETS
    assert _wrong(cases) == []
    assert _memory_model_misses(cases) == []


@pytest.mark.slow
def test_deit_whole_subnets_fused_equal_unfused():
    """About 10 minutes on 2 cores."""
    cases = _in_two_processes("deit-tiny-mcu", list(range(SUBNETS)), False, 4, INPUTS)
    assert len(cases) == SUBNETS
    assert _wrong(cases) == []
    assert _memory_model_misses(cases) == []


@pytest.mark.parametrize("preset_cases, inputs", [
    ("digits_cases", QUICK_INPUTS), ("deit_first_block_cases", QUICK_INPUTS),
    ("deit_first_block_int4_cases", INT4_HOST_INPUTS),
    pytest.param("digits_int4_cases", INPUTS, marks=pytest.mark.slow)])
def test_host_runner_fused_equals_its_unfused_run(request, tmp_path, preset_cases, inputs):
    """Real TFLM through our glue: fused bytes == the same TFLM's bytes on the unfused model, every
    case and input. Against the wheel the unfused run may differ by an LSB on a rounding tie when
    the TFLM tree is older than the wheel (docs/tflm-host-runner.md): counted and printed. With
    INT4 weights the linear layers are quantised per tensor, whose multipliers such a tree derives
    in single precision where the wheel (and our glue) use double: there the fused bytes must equal
    the wheel's, and the tree's unfused run is what is counted."""
    reason = host_runner.host_runner_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
    from mcuformer_tf.tflm.tflite_graph import read_model

    cases = request.getfixturevalue(preset_cases)
    int4 = "int4" in preset_cases
    unequal_to_wheel = 0
    for index, case in enumerate(cases):
        paths = {kind: tmp_path / f"{kind}{index}.tflite" for kind in ("unfused", "fused")}
        paths["unfused"].write_bytes(case.unfused)
        paths["fused"].write_bytes(case.fused)
        graph = read_model(case.unfused)
        for seed in range(inputs):
            (image,) = model_inputs(graph, seed)
            fused, _ = host_runner.run_host(paths["fused"], image.tobytes(), 1 << 24)
            unfused, _ = host_runner.run_host(paths["unfused"], image.tobytes(), 1 << 24)
            wheel = [a.tobytes() for a in run_tflm(case.unfused, image)]
            assert fused == (wheel if int4 else unfused), (case.config.describe(), seed)
            unequal_to_wheel += (unfused if int4 else fused) != wheel
    runs = len(cases) * inputs
    print(f"{preset_cases}: host runner ({'unfused' if int4 else 'fused'}) = wheel on "
          f"{runs - unequal_to_wheel} of {runs} runs")
