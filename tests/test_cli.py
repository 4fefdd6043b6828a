"""The CLI: every mistake a user can make ends in one line on stderr and exit code 2."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mcuformer_tf.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_sample_prints_a_config_of_the_space():
    result = run_cli("sample", "--space", "digits", "--pick", "largest")
    assert result.exit_code == 0
    assert json.loads(result.output)["embed_dim"] == 64


def test_sample_writes_a_file(tmp_path):
    result = run_cli("sample", "--space", "deit-tiny-mcu", "--seed", "3", "-o", tmp_path / "c.json")
    assert result.exit_code == 0
    assert json.loads((tmp_path / "c.json").read_text())["num_classes"] == 1000


def test_unknown_preset():
    assert_one_line_error(run_cli("sample", "--space", "imagenet"),
                          "unknown search space preset 'imagenet'")


def test_bad_space_file(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("name: x\nnum_classes: 10\nimage_size: [32]\npatch_size: [5]\nembed_dim: [8]\n"
                   "depth: [1]\nnum_heads: [1]\nmlp_ratio: [2]\nrank_ratio: [0.5]\n")
    assert_one_line_error(run_cli("train", "--space", bad, "--out", tmp_path / "r"),
                          "patch_size: 5 divides no image_size")


@pytest.mark.parametrize("data, fragment", [
    ("imagefolder:/nonexistent/imagenet", "imagefolder:/nonexistent/imagenet: no such directory"),
    ("cifar10:/nonexistent", "cifar10:/nonexistent: no such directory"),
    ("mnist", "unknown data 'mnist'"),
])
def test_bad_data(tmp_path, data, fragment):
    assert_one_line_error(run_cli("train", "--data", data, "--out", tmp_path / "r"), fragment)
    assert not (tmp_path / "r" / "run.json").exists()


def test_unknown_strategy(tmp_path):
    assert_one_line_error(run_cli("train", "--strategy", "tpu", "--out", tmp_path / "r"),
                          "unknown strategy 'tpu'")


def write_config(path, **change):
    config = {"image_size": 32, "patch_size": 8, "rank_ratio": 0.5, "embed_dim": 32, "depth": 2,
              "num_heads": 1, "mlp_ratio": 2, "num_classes": 10, **change}
    path.write_text(json.dumps(config))
    return path


def test_eval_errors(tmp_path, trained_run):
    assert_one_line_error(run_cli("eval", "--supernet", tmp_path), "is not a training run")
    bad = write_config(tmp_path / "bad.json", patch_size=6)
    assert_one_line_error(run_cli("eval", "--supernet", trained_run.path, "--config", bad),
                          "patch_size: image_size 32 is not divisible by patch_size 6")
    outside = write_config(tmp_path / "outside.json", embed_dim=40)
    assert_one_line_error(run_cli("eval", "--supernet", trained_run.path, "--config", outside),
                          "embed_dim: 40 is not in the space 'digits'")
    assert_one_line_error(run_cli("eval", "--supernet", trained_run.path, "--config",
                                  tmp_path / "missing.json"), "subnet config file not found")


def test_train_refuses_to_overwrite_and_checks_resume(trained_run):
    assert_one_line_error(run_cli("train", "--out", trained_run.path),
                          "already holds a training run; pass --resume")
    assert_one_line_error(run_cli("train", "--out", trained_run.path, "--resume", "--space",
                                  "deit-tiny-mcu"), "--space deit-tiny-mcu differs")


def test_eval_prints_accuracy(trained_run, tmp_path):
    config = tmp_path / "smallest.json"
    run_cli("sample", "--space", "digits", "--pick", "smallest", "-o", config)
    result = run_cli("eval", "--supernet", trained_run.path, "--config", "largest",
                     "--config", config)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("val accuracy")]
    assert len(lines) == 2 and "(360 images)" in lines[0]


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    process = subprocess.run(
        [sys.executable, "-m", "mcuformer_tf", "sample", "--space", tmp_path / "none.yaml"],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [
        f"Error: search space file not found: {tmp_path / 'none.yaml'}"]
