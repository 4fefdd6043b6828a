"""tflm_custom_ops/: the C library equals TFLM's arithmetic; the host runner equals the TFLM wheel.

The C library (built with CMake, loaded through ctypes) is checked everywhere
against the numpy model of TFLM's arithmetic and against gemmlowp's
definitions. The host runner needs the user's TFLM tree and microlite library
(TFLM_ROOT, TFLM_LIB; docs/tflm-host-runner.md): without them its tests skip
and say so.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcuformer_tf
from mcuformer_tf.compiler import c_library as mcuf_c
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm import host_runner

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
int32s = st.integers(INT32_MIN, INT32_MAX)
SOURCES = host_runner.SOURCES_DIR


def gemmlowp_srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul in Python integers."""
    if a == b == INT32_MIN:
        return INT32_MAX
    total = a * b + ((1 << 30) if a * b >= 0 else 1 - (1 << 30))
    return abs(total) // (1 << 31) * (1 if total >= 0 else -1)


def gemmlowp_rdbp(x, exponent):
    """gemmlowp RoundingDivideByPOT in Python integers."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def test_library_builds_and_has_the_package_version():
    assert mcuf_c.version() == mcuformer_tf.__version__


def test_two_clones_with_the_same_sources_do_not_share_a_build(tmp_path, monkeypatch):
    """A CMake build tree belongs to the source tree that configured it: a second clone
    must still build after the first is deleted (a shared cache once broke CI this way)."""
    monkeypatch.setattr(host_runner, "CACHE_DIR", tmp_path / "cache")
    built = []
    for clone in ("first", "second"):
        sources = tmp_path / clone / "tflm_custom_ops"
        shutil.copytree(SOURCES, sources)
        monkeypatch.setattr(host_runner, "SOURCES_DIR", sources)
        built.append(host_runner.build_mcuf_library())
        shutil.rmtree(tmp_path / clone)
    assert built[0].parent != built[1].parent
    assert built[1].is_file()


def test_fixedpoint_edge_values():
    assert mcuf_c.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert mcuf_c.saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    # 2ab/2^32 = ±1.5 and ±0.5: ties round toward +infinity, like ARM's VQRDMULH
    assert [mcuf_c.saturating_rounding_doubling_high_mul(a, 1 << 30) for a in (3, -3, 1, -1)] == [2, -1, 1, 0]
    assert [mcuf_c.rounding_divide_by_pot(x, 1) for x in (5, -5, 4, -4, -3)] == [3, -3, 2, -2, -2]
    assert mcuf_c.rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert mcuf_c.quantize_multiplier(0.0) == (0, 0)
    assert mcuf_c.quantize_multiplier(0.5) == (1 << 30, 0)
    assert mcuf_c.quantize_multiplier(1.0) == (1 << 30, 1)
    assert mcuf_c.quantize_multiplier(2.0**-40) == (0, 0)  # flushed to zero, as TFLM does
    assert mcuf_c.quantize_multiplier(1 - 2.0**-40) == (1 << 30, 1)  # rounds up to 2^31: halved
    assert mcuf_c.multiply_by_quantized_multiplier(1000, *mcuf_c.quantize_multiplier(0.0123)) == 12
    assert mcuf_c.multiply_by_quantized_multiplier(3 << 29, 1 << 30, 2) == INT32_MIN >> 1  # x << 2 wraps
    with pytest.raises(McuformerError, match="cannot quantize"):
        mcuf_c.quantize_multiplier(float("nan"))
    with pytest.raises(McuformerError, match=r"shift=31 is outside \[-31, 30\]"):
        mcuf_c.multiply_by_quantized_multiplier(1, 1, 31)


@settings(max_examples=300, deadline=None)
@given(a=int32s, b=int32s, x=int32s, exponent=st.integers(0, 31))
def test_fixedpoint_primitives_equal_gemmlowp(a, b, x, exponent):
    assert mcuf_c.saturating_rounding_doubling_high_mul(a, b) == gemmlowp_srdhm(a, b)
    assert mcuf_c.rounding_divide_by_pot(x, exponent) == gemmlowp_rdbp(x, exponent)


@settings(max_examples=300, deadline=None)
@given(real=st.just(0.0) | st.floats(2.0**-45, 2.0**24) | st.floats(-(2.0**24), -(2.0**-45)))
def test_quantize_multiplier_equals_numpy_model(real):
    from mcuformer_tf.tflm.arith.quantization import quantize_multiplier

    assert mcuf_c.quantize_multiplier(real) == quantize_multiplier(real)


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(int32s, min_size=1, max_size=16), multiplier=st.integers(0, INT32_MAX),
       shift=st.integers(-31, 30))
def test_multiply_by_quantized_multiplier_equals_numpy_model(xs, multiplier, shift):
    from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier

    expected = multiply_by_quantized_multiplier(np.array(xs, np.int64), multiplier, shift)
    got = [mcuf_c.multiply_by_quantized_multiplier(x, multiplier, shift) for x in xs]
    assert got == expected.tolist()


def test_sanitized_library_runs_clean_and_traps_undefined_behaviour():
    """Under ASan+UBSan, 2000 requantisations over the whole valid domain equal the numpy model;
    then an out-of-range shift (called past mcuf_c's checks) is trapped."""
    from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier

    rng = np.random.default_rng(0)
    xs = rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True).tolist()
    multipliers = rng.integers(0, INT32_MAX, 2000, endpoint=True).tolist()
    shifts = rng.integers(-31, 30, 2000, endpoint=True).tolist()
    script = (
        "import json, sys\n"
        "from mcuformer_tf.compiler import c_library as mcuf_c\n"
        "args = zip(*json.load(sys.stdin))\n"
        "print(*(mcuf_c.multiply_by_quantized_multiplier(*a, sanitize=True) for a in args))\n"
        "sys.stdout.flush()\n"
        "mcuf_c.load(sanitize=True).mcuf_rounding_divide_by_pot(5, 40)\n"
        "print('not trapped')\n")
    env = {**os.environ, **host_runner.sanitizer_env(), "PYTHONPATH": str(SOURCES.parent)}
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps([xs, multipliers, shifts]),
                            capture_output=True, text=True, env=env)
    expected = multiply_by_quantized_multiplier(np.array(xs), np.array(multipliers), np.array(shifts)).tolist()
    assert [int(v) for v in result.stdout.split()] == expected, result.stderr[-2000:]
    assert result.returncode != 0 and "shift exponent 40" in result.stderr


def test_cmake_says_it_skips_the_host_runner_without_tflm(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("TFLM_ROOT", "TFLM_LIB")}
    result = subprocess.run(["cmake", "-S", str(SOURCES), "-B", str(tmp_path)], capture_output=True,
                            text=True, env=env, check=True)
    assert "mcuf: TFLM_ROOT not set: skipping the host runner" in result.stdout


def test_makefile_fragment_adds_our_sources_and_includes(tmp_path):
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"include {SOURCES}/tflm_custom_ops.mk\n"
                        "show:\n\t@echo $(MICROLITE_CC_KERNEL_SRCS)\n\t@echo $(INCLUDES)\n")
    sources, includes = subprocess.run(["make", "-s", "-f", str(makefile), "show"], capture_output=True,
                                       text=True, check=True).stdout.splitlines()
    assert f"{SOURCES}/src/fixedpoint.c" in sources.split()
    assert f"{SOURCES}/glue/mcuf_ops.cc" in sources.split()
    assert includes.split() == [f"-I{SOURCES}/include", f"-I{SOURCES}/glue"]


def test_skip_reason_names_tflm_root_when_unset(monkeypatch):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    assert "TFLM_ROOT not set" in host_runner.host_runner_skip_reason()
    assert host_runner.build_host_runner() is None
    with pytest.raises(McuformerError, match="TFLM_ROOT not set"):
        host_runner.run_host("model.tflite", None, 1 << 20)


# --- with the user's TFLM -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def runner():
    reason = host_runner.host_runner_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return host_runner.build_host_runner()


@pytest.fixture(scope="module")
def small_int8_model(tmp_path_factory):
    """A batch-1 Conv2D+Dense tf_keras model, full-integer quantised; (path, bytes, input shape)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input((8, 8, 3), batch_size=1),
        tf_keras.layers.Conv2D(4, 3, activation="relu"),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(5),
    ])
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    data = converter.convert()
    path = tmp_path_factory.mktemp("model") / "conv_dense_int8.tflite"
    path.write_bytes(data)
    return path, data, (1, 8, 8, 3)


def test_host_runner_output_bytes_equal_the_wheel(runner, small_int8_model):
    from tflite_micro.python.tflite_micro import runtime

    path, data, shape = small_int8_model
    wheel = runtime.Interpreter.from_bytes(data, arena_size=1 << 20)
    rng = np.random.default_rng(1)
    for _ in range(4):
        image = rng.integers(-128, 128, shape, dtype=np.int8)
        wheel.set_input(image, 0)
        wheel.invoke()
        outputs, used = host_runner.run_host(path, image.tobytes(), 1 << 20)
        assert outputs == [wheel.get_output(0).tobytes()]
        assert len(outputs[0]) == 5 and 0 < used < 1 << 20


def test_find_host_arena_is_the_smallest_that_runs(runner, small_int8_model):
    path = small_int8_model[0]
    arena, used = host_runner.find_host_arena(path)
    assert arena % 16 == 0 and 0 < used <= arena
    assert host_runner.run_host(path, None, arena)[1] == used
    with pytest.raises(host_runner.TflmRunError):
        host_runner.run_host(path, None, arena - 16)


def test_host_runner_equals_the_wheel_on_digits_subnets(runner, request, tmp_path):
    """The demo's ViT family (attention, LayerNorm, QuickGELU, all TFLM builtins), 10 random subnets."""
    from tflite_micro.python.tflite_micro import runtime

    # Asked for here, after `runner` may have skipped: the session fixture trains a supernet.
    for index, (config, data) in enumerate(request.getfixturevalue("digits_int8_models")):
        path = tmp_path / f"subnet{index}.tflite"
        path.write_bytes(data)
        wheel = runtime.Interpreter.from_bytes(data, arena_size=1 << 22)
        shape = wheel.get_input_details(0)["shape"]
        for seed in range(2):
            image = np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)
            wheel.set_input(image, 0)
            wheel.invoke()
            outputs, _ = host_runner.run_host(path, image.tobytes(), 1 << 22)
            assert outputs == [wheel.get_output(0).tobytes()], config.describe()


def test_host_runner_prints_outputs_then_arena_use(runner, small_int8_model):
    path, _, _ = small_int8_model
    result = subprocess.run([str(runner), str(path), "--arena", "100000", "--repeat", "3"],
                            capture_output=True, text=True, check=True)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [words[:2] for words in lines] == [["output", "0"], ["arena_used_bytes", lines[1][1]]]
    assert len(bytes.fromhex(lines[0][2])) == 5 and int(lines[1][1]) > 0
    usage = subprocess.run([str(runner), str(path)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("mcuf_run: usage: mcuf_run MODEL.tflite")


def test_host_runner_reports_a_small_arena_and_a_wrong_input(runner, small_int8_model):
    path, _, _ = small_int8_model
    with pytest.raises(host_runner.TflmRunError, match="AllocateTensors failed with an arena of 1000 bytes"):
        host_runner.run_host(path, None, 1000)
    with pytest.raises(host_runner.TflmRunError, match="with an arena of 64 bytes"):
        host_runner.run_host(path, None, 64)  # this TFLM crashes: it uses the allocator it could not place
    with pytest.raises(McuformerError, match="has 3 bytes, input 0 needs 192"):
        host_runner.run_host(path, b"abc", 1 << 20)


def test_tflm_makefile_takes_our_sources_through_external_dir(runner):
    # TFLM's Makefile runs Python helpers (numpy, Pillow) while it reads itself: use ours.
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["make", "-s", "-f", "tensorflow/lite/micro/tools/make/Makefile", f"EXTERNAL_DIR={SOURCES}",
         "list_library_sources"], cwd=os.environ["TFLM_ROOT"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{SOURCES}/src/fixedpoint.c" in result.stdout.split()


# --- the MCUF glue: fused models in the host runner ---------------------------------------------

GLUED_KINDS = ("mlp", "attention", "patch_embed")  # kinds whose TFLM glue mcuf_ops.cc registers


def _compile_fusing(model_bytes: bytes, kinds: tuple):
    """compile_model with only the blocks of `kinds` fused (the others stay builtin)."""
    from mcuformer_tf.compiler import match, pipeline

    def match_kinds(compilation):
        compilation.blocks = [block for block in match.match(compilation.model) if block.kind in kinds]

    return pipeline.compile_model(model_bytes, (match_kinds, pipeline.fuse_pass, pipeline.plan_pass))


@pytest.mark.parametrize("weights", ["fresh_int8_tflite", "perturbed_int8_tflite"])
@pytest.mark.parametrize("kinds", [(kind,) for kind in GLUED_KINDS] + [None], ids=[*GLUED_KINDS, "all"])
def test_host_runner_runs_fused_blocks_bit_exact(runner, request, tmp_path, kinds, weights):
    """Through the glue, the fused model's output bytes == the same TFLM's on the unfused model, and
    the arena executor's on the fused model == the wheel's on the unfused one, on random inputs
    of a few digits subnets, each block kind fused alone and all together; perturbed
    weights keep the LayerNorm gamma and beta and the biases a fresh supernet's converter drops."""
    import random

    from mcuformer_tf.compiler import arena_executor
    from mcuformer_tf.compiler.pipeline import compile_model
    from mcuformer_tf.compiler.subgraphs import FUSED
    from mcuformer_tf.tflm import runtime as tflm_runtime
    from mcuformer_tf.tflm.tflite_graph import read_model

    int8_tflite = request.getfixturevalue(weights)
    space = request.getfixturevalue("digits_space")
    configs = [space.smallest(), *(space.sample(random.Random(seed)) for seed in (1, 2))]
    for index, config in enumerate(configs):
        unfused = int8_tflite(config).read_bytes()
        compiled = compile_model(unfused) if kinds is None else _compile_fusing(unfused, kinds)
        codes = {code for _, code in compiled.fusion.fused}
        assert codes == {FUSED[kind].code for kind in kinds or GLUED_KINDS}, (config.describe(),
                                                                            compiled.fusion.kept)
        path, unfused_path = tmp_path / f"fused{index}.tflite", tmp_path / f"unfused{index}.tflite"
        path.write_bytes(compiled.model_bytes)
        unfused_path.write_bytes(unfused)
        graph = read_model(unfused)
        shape = graph.tensor(graph.inputs[0]).shape
        used = []
        for seed in range(2):
            image = np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)
            expected = tflm_runtime.run_tflm(unfused, image)[0].tobytes()
            assert arena_executor.run_planned(compiled.model_bytes, image)[0].tobytes() == expected
            outputs, arena_used = host_runner.run_host(path, image.tobytes(), 1 << 22)
            # The same TFLM on the unfused model: an older tree than the wheel's may round a
            # tie differently (docs/tflm-host-runner.md), our glue must not.
            assert outputs == host_runner.run_host(unfused_path, image.tobytes(), 1 << 22)[0], \
                config.describe()
            used.append(arena_used)
        assert used[0] == used[1]
        print(f"{kinds or 'all'} {config.describe()}: arena_used_bytes {used[0]}")
