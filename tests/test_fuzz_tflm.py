"""Hostile fused models through the MCUF glue in real TFLM: a result or an error status, never a
memory error (needs TFLM_ROOT; skips saying why without it).

The host runner mcuf_run is built with our glue and kernels under ASan+UBSan (TFLM's own library
as TFLM's Makefile built it). 2,000 mutations (model_mutations.py: the MCUF options blob, the
fused ops' shapes, types, quantisation, buffers and tensor indices, the offline plan, and random
bytes) of two compiled digits ViTs each end in exit 0 (ran), 2 (mcuf_check_model refused the
file) or 3 (TFLM's AllocateTensors or Invoke failed, one of our Prepare lines naming the op and
field), within a time limit, with no sanitizer report. The regression tests hold the hostile
models the fuzz found before the fixes.
"""
import collections
import os
import random
import subprocess

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from model_mutations import KINDS, mutate, pack

from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.tflm import host_runner

MUTATIONS = 2000
SECONDS = 20  # per run: far above a healthy one (about 0.05 s); longer counts as a hang
ARENA = 1 << 20
SEEDS = (None, 5)  # the digits space's smallest subnet, and a low-rank 4-block one with 2 heads
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner():
    reason = host_runner.host_runner_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return host_runner.build_host_runner(sanitize=True)


@pytest.fixture(scope="module")
def fused(digits_space, perturbed_int8_tflite):
    configs = [digits_space.smallest() if seed is None else digits_space.sample(random.Random(seed))
               for seed in SEEDS]
    return [compile_model(perturbed_int8_tflite(config).read_bytes()).model_bytes for config in configs]


def _run(runner, path):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    return subprocess.run([str(runner), str(path), "--arena", str(ARENA)], capture_output=True, text=True,
                          timeout=SECONDS, env=env)


def _assert_status(result, label):
    assert result.returncode in (0, 2, 3), (label, result.returncode, result.stderr[-3000:])
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, (label, result.stderr[-3000:])


def test_mutated_fused_models_end_in_a_result_or_an_error_status(runner, fused, tmp_path):
    rng = random.Random(18)
    outcomes = collections.Counter()
    path = tmp_path / "mutated.tflite"
    for case in range(MUTATIONS):
        kind, data = mutate(fused[case % len(fused)], rng)
        path.write_bytes(data)
        result = _run(runner, path)
        _assert_status(result, f"case {case} ({kind})")
        outcomes[kind, result.returncode] += 1
    for kind in KINDS:
        print(f"{kind}: {outcomes[kind, 0]} ran, {outcomes[kind, 2]} refused by mcuf_check_model, "
              f"{outcomes[kind, 3]} failed AllocateTensors/Invoke")
    print(f"{sum(outcomes.values())} mutated fused models, 0 crashes, 0 sanitizer reports, 0 hangs")
    assert sum(outcomes.values()) == MUTATIONS
    assert all(sum(outcomes[kind, code] for code in (0, 2, 3)) > 0 for kind in KINDS)


def _model(raw):
    return schema.ModelT.InitFromPackedBuf(raw, 0)


def _mcuf_op(model, code: bytes):
    codes = model.operatorCodes
    return next(op for op in model.subgraphs[0].operators if codes[op.opcodeIndex].customCode == code)


def _options_root_width(model):
    """An MLP's options with the root's byte width 255: flexbuffers' GetRoot reads before the blob
    (UBSan: pointer overflow in flexbuffers.h) unless the glue verifies the blob first."""
    op = _mcuf_op(model, b"MCUF_MLP")
    op.customOptions = list(bytes(op.customOptions[:-1])) + [255]


def _plan_before_arena(model):
    """A tensor planned at offset -2: TFLM places it 2 bytes before the arena (ASan: MEAN's memset
    writes there) unless mcuf_check_model refuses the plan."""
    entry = next(m for m in model.metadata if m.name == b"OfflineMemoryAllocation")
    words = np.frombuffer(bytes(model.buffers[entry.buffer].data), np.int32).copy()
    words[3 + int(np.argmax(words[3:] > 0))] = -2
    model.buffers[entry.buffer].data = np.frombuffer(words.tobytes(), np.uint8)


def _heads_overflow(model):
    """Attention 'dims' whose 3 x heads x head_dim overflows int32."""
    from flatbuffers import flexbuffers

    op = _mcuf_op(model, b"MCUF_ATTENTION")
    options = flexbuffers.Loads(bytes(op.customOptions))
    options["dims"].update(heads=1 << 20, head_dim=1 << 12)
    op.customOptions = list(flexbuffers.Dumps(options))


@pytest.mark.parametrize("damage, code, message", [
    (_options_root_width, 3, "MCUF_MLP: custom options are not a valid flexbuffer"),
    (_plan_before_arena, 2, "OfflineMemoryAllocation places tensor"),
    (_heads_overflow, 3, "MCUF_ATTENTION: the 'dims' map needs integer heads and head_dim"),
    (None, 2, "not a .tflite flatbuffer"),
])
def test_hostile_models_the_fuzz_found_are_refused(runner, fused, tmp_path, damage, code, message):
    if damage is None:  # a truncated file: TFLM read its vectors past the end
        data = fused[1][:len(fused[1]) // 2]
    else:
        model = _model(fused[1])
        damage(model)
        data = pack(model)
    path = tmp_path / "hostile.tflite"
    path.write_bytes(data)
    result = _run(runner, path)
    _assert_status(result, message)
    assert result.returncode == code and message in result.stderr, result.stderr[-2000:]
