"""`mcuformer-tf run | arena | report`: their output, and every error as one line, exit code 2."""
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run_cli


def _with_logistic_as(raw, builtin=None, custom=None):
    """The model with its LOGISTIC operator code turned into another builtin or a custom op."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    code = next(c for c in model.operatorCodes if c.builtinCode == schema.BuiltinOperator.LOGISTIC)
    code.builtinCode = getattr(schema.BuiltinOperator, builtin or "CUSTOM")
    code.deprecatedBuiltinCode = min(code.builtinCode,
                                     schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.customCode = custom
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def files(digits_space, tmp_path_factory):
    """A good int8 ViT and one file per way a model can be wrong."""
    import tensorflow as tf
    import tf_keras as keras

    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.supernet import Supernet
    from mcuformer_tf.quantize.convert import to_int8_tflite

    supernet = Supernet(digits_space)
    supernet(np.zeros((1, 32, 32, 3), np.float32))
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    raw = to_int8_tflite(extract_subnet(supernet, digits_space.sample(random.Random(2))), images)
    x = keras.Input((4,), batch_size=1)
    float_model = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(x, keras.layers.Dense(3)(x))).convert()
    folder = tmp_path_factory.mktemp("cli")
    contents = {"vit": raw, "random": np.random.default_rng(0).bytes(4096),
                "truncated": raw[:len(raw) // 2], "float": float_model,
                "gelu": _with_logistic_as(raw, builtin="GELU"),
                "custom": _with_logistic_as(raw, custom="MyOp"),
                "mcuf": _with_logistic_as(raw, custom="MCUF_FUTURE"),
                "bad_mlp": _with_logistic_as(raw, custom="MCUF_MLP")}
    paths = {name: folder / f"{name}.tflite" for name in contents}
    for name, data in contents.items():
        paths[name].write_bytes(data)
    paths["missing"] = folder / "missing.tflite"
    return paths


def test_run_prints_tflm_and_the_reference_side_by_side(files):
    result = run_cli("run", files["vit"], "--seed", 3)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": int8 [1, 32, 32, 3] (random, seed 3)")
    assert lines[1].endswith(": int8 [1, 10]")
    tflm, litert = (re.match(rf"  {name} +((?:-?\d+ ){{10}})  top-1 (\d)$", line)
                    for name, line in (("TFLM", lines[2]), ("LiteRT", lines[3])))
    assert tflm and litert, result.stdout
    diff = np.abs(np.array(tflm[1].split(), int) - np.array(litert[1].split(), int)).max()
    assert lines[4] == f"  max difference {diff} LSB"


def test_run_reads_an_input_file(files, tmp_path):
    x = np.random.default_rng(5).integers(-128, 128, (1, 32, 32, 3), dtype=np.int8)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    np.save(tmp_path / "x.npy", x)
    outputs = [run_cli("run", files["vit"], "--input", tmp_path / name).stdout.splitlines()[2:]
               for name in ("x.bin", "x.npy")]
    assert outputs[0] == outputs[1] and outputs[0][0].startswith("  TFLM")
    assert_one_line_error(run_cli("run", files["vit"], "--input", tmp_path / "none.bin"),
                          "none.bin: No such file or directory")


def test_arena_prints_the_minimum_and_the_failure_below_it(files):
    result = run_cli("arena", files["vit"])
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    match = re.match(r"arena ([\d,]+) bytes \([\d.]+ KiB\): persistent ([\d,]+) \+ non-persistent "
                     r"([\d,]+) \(TFLM reports ([\d,]+) used\)$", first)
    arena, persistent, non_persistent, used = (int(g.replace(",", "")) for g in match.groups())
    assert arena == used == persistent + non_persistent
    assert second.startswith(f"with {arena - 16:,} bytes: TFLM: TFLM failed to allocate tensors")


def test_report_prints_the_plan_and_draws_it(files, tmp_path):
    result = run_cli("report", files["vit"], "--png", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert "non-persistent arena (TFLM's head): " in result.stdout
    assert result.stdout.rstrip().endswith(f"arena plot -> {tmp_path / 'a.png'}")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_fused_model_says_what_it_does_not_model(files):
    from mcuformer_tf.tflm.tflite_graph import read_model

    count = sum(op.opcode == "MCUF_FUTURE" for op in read_model(files["mcuf"]).operators)
    result = run_cli("report", files["mcuf"])
    assert result.exit_code == 0, result.output
    assert count > 0 and f"scratch not modelled for {count} operators (MCUF_FUTURE)" in \
        result.stdout
    # an MCUF_MLP (whose scratch is modelled) with no options is refused, naming it
    assert_one_line_error(run_cli("report", files["bad_mlp"]), "(MCUF_MLP): its custom options "
                                                               "are not an MCUF map")


ERRORS = {
    "missing": "missing.tflite: No such file or directory",
    "random": "random.tflite: not a TFLite flatbuffer",
    "truncated": "truncated.tflite: malformed TFLite flatbuffer",
    "float": "operator 0 (FULLY_CONNECTED) has float32 input",
    "gelu": "is the builtin GELU: stock TFLM has no kernel for it",
    "custom": "is the custom op 'MyOp': stock TFLM has no kernel for it",
}


@pytest.mark.parametrize("command", ["run", "arena", "report"])
@pytest.mark.parametrize("name", list(ERRORS))
def test_every_error_is_one_line_and_exit_code_2(files, command, name):
    assert_one_line_error(run_cli(command, files[name]), ERRORS[name])


def test_a_fused_model_needs_the_host_runner(files):
    from mcuformer_tf.tflm.host_runner import host_runner_skip_reason

    assert_one_line_error(run_cli("arena", files["bad_mlp"]),
                          "custom op MCUF_MLP: stock TFLM has no kernel for it; fused models run "
                          "in the host runner (see docs/tflm-host-runner.md)")
    reason = host_runner_skip_reason()
    if reason is None:
        pytest.skip("the host runner is available here: `run` would use it")
    assert_one_line_error(run_cli("run", files["bad_mlp"]),
                          f"has MCUF custom ops, which run only in the host runner: {reason}")


def test_errors_reach_a_real_terminal_as_one_line(files):
    """Nothing TFLM prints below Python (fd 2) leaks past the one line."""
    for name in ("gelu", "truncated"):
        result = subprocess.run([sys.executable, "-m", "mcuformer_tf", "run", str(files[name])],
                                capture_output=True, text=True)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
