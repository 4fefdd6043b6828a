"""The command line answers bad input at once and alone: one line on stderr, exit code 2, before
TensorFlow or KerasTuner is imported; help prints no log line; what native libraries write to the
process's stderr goes to the log file unless --verbose.

Each case runs in a fresh interpreter, the way a user's shell starts the command.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "tf_keras", "keras_tuner", "tensorflow_model_optimization")
# Runs the CLI in-process in a fresh interpreter, then reports the exit code and the heavy imports.
PROBE = """
import json, sys
from mcuformer_tf.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def _run(args, tmp_path, script=PROBE):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


@pytest.fixture(scope="module")
def not_a_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("not_a_run")
    return folder


BAD_INPUT = [
    (["train", "--space", "no-such-preset", "--out", "run"], "unknown search space preset 'no-such-preset'"),
    (["train", "--data", "imagefolder:/no/such/folder", "--out", "run"], "no such directory"),
    (["train", "--data", "mnist", "--out", "run"], "unknown data 'mnist'"),
    (["train", "--strategy", "tpu", "--out", "run"], "unknown strategy 'tpu'"),
    (["eval", "--supernet", "NOT_A_RUN"], "is not a training run"),
    (["export", "--supernet", "NOT_A_RUN", "-o", "m.tflite"], "is not a training run"),
    (["tune", "--supernet", "NOT_A_RUN", "--sram", "1KiB", "--out", "t"], "leaves nothing for the arena"),
    (["tune", "--supernet", "NOT_A_RUN", "--out", "t"], "is not a training run"),
    (["report", "missing.tflite"], "missing.tflite: No such file or directory"),
    (["compile", "missing.tflite", "-o", "f.tflite"], "missing.tflite: No such file or directory"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a[:2]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_before_any_heavy_import(args, message, not_a_run, tmp_path):
    result = _run([str(not_a_run) if a == "NOT_A_RUN" else a for a in args], tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    lines = result.stderr.strip().splitlines()
    assert report["code"] == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert report["heavy"] == []


@pytest.mark.parametrize("command", ["", "train", "tune", "export", "compile", "deploy", "report", "demo"])
def test_help_prints_usage_and_no_log_line(command, tmp_path):
    result = _run([*command.split(), "--help"], tmp_path)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}
    assert result.stdout.startswith("Usage: ") and result.stderr == ""


# A command that writes to file descriptor 2 as a native library does, then fails as a user's mistake.
NOISY = """
import os, sys
from mcuformer_tf.cli import main
from mcuformer_tf.errors import McuformerError

@main.command("noisy")
def noisy():
    os.write(2, b"I0000 oneDNN custom operations are on\\n")
    raise McuformerError("the real problem")

try:
    main(sys.argv[1:])
except SystemExit as exit:
    sys.exit(exit.code)
"""


def test_native_start_up_chatter_goes_to_the_log_unless_verbose(tmp_path):
    quiet = _run(["noisy"], tmp_path, NOISY)
    assert quiet.returncode == 2 and quiet.stderr == "Error: the real problem\n"
    log = tmp_path / ".cache" / "mcuformer-tf" / "native-stderr.log"
    assert log.read_text() == "I0000 oneDNN custom operations are on\n"
    verbose = _run(["--verbose", "noisy"], tmp_path, NOISY)
    assert verbose.returncode == 2
    assert verbose.stderr == "I0000 oneDNN custom operations are on\nError: the real problem\n"
