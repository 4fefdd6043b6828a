"""`mcuformer-tf deploy`: the generated TFLM project, the fit checks, and (with TFLM) the full firmware.

Without TFLM_ROOT and a Cortex-M7 TFLM library (TFLM_M7_LIB) the project is written and checked and
the firmware step says what it skipped; with them, the firmware is linked for the STM32F746 and one
inference in qemu must give the host TFLM run's output bytes.
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run_cli

from mcuformer_tf import deploy
from mcuformer_tf.tflite_graph import read_model

SEED = 7  # a digits config: 1 head, dense, patch 8


@pytest.fixture(scope="module")
def fused(fresh_int8_tflite, digits_space, tmp_path_factory):
    path = tmp_path_factory.mktemp("deploy") / "fused.tflite"
    assert run_cli("compile", fresh_int8_tflite(digits_space.sample(random.Random(SEED))), "-o", path).exit_code == 0
    return path


def test_deploy_writes_the_project(fused, tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_M7_LIB", raising=False)
    result = run_cli("deploy", fused, "-o", tmp_path / "out", "--arena", 40_000, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "full firmware: skipped: set TFLM_ROOT" in result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(deploy.FILES)
    data = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", (out / "model_data.cc").read_text()))
    assert data == fused.read_bytes()
    assert "alignas(16) const unsigned char g_model_data" in (out / "model_data.cc").read_text()
    assert ".extflash" not in (out / "model_data.cc").read_text()
    graph = read_model(fused)
    used = {op.opcode for op in graph.operators}
    resolver = (out / "op_resolver.h").read_text()
    registered = set(re.findall(r"\);  // ([A-Z_0-9]+)\n", resolver)) | \
        set(re.findall(r'AddCustom\("(\w+)"', resolver))
    assert registered == used and f"MicroMutableOpResolver<{len(used)}>" in resolver
    assert {"MCUF_PATCH_EMBED", "MCUF_ATTENTION", "MCUF_MLP"} <= used
    settings = (out / "model_settings.h").read_text()
    assert "constexpr int kTensorArenaSize = 40000;" in settings
    assert "constexpr int kInputShape[4] = {1, 32, 32, 3};" in settings
    assert "constexpr int kOutputBytes = 10;" in settings
    example = [int(v) for v in re.findall(r"(\d+),", (out / "example_input.cc").read_text().split("{", 1)[1])]
    expected = np.random.default_rng(3).integers(-128, 128, (1, 32, 32, 3), np.int8)
    assert example == expected.reshape(-1).view(np.uint8).tolist()


def test_deploy_refuses_what_does_not_fit(fused, tmp_path):
    assert_one_line_error(run_cli("deploy", fused, "-o", tmp_path, "--arena", 400_000),
                          "does not fit stm32f746: SRAM: arena 400,000 B + runtime 24,576 B = 424,576 B > "
                          "327,680 B")
    big = tmp_path / "big.tflite"  # a flatbuffer's reader ignores bytes after it: 1.1 MB of padding
    big.write_bytes(fused.read_bytes() + bytes(1_100_000))
    size = big.stat().st_size
    assert_one_line_error(run_cli("deploy", big, "-o", tmp_path / "a", "--arena", 40_000),
                          f"flash: model {size:,} B + code 196,608 B = {size + 196_608:,} B > 1,048,576 B "
                          "(try --target stm32f746-disco")
    result = run_cli("deploy", big, "-o", tmp_path / "b", "--arena", 40_000, "--target", "stm32f746-disco")
    assert result.exit_code == 0, result.output
    assert f"external flash {size:,} of 16,777,216 B" in result.output
    assert 'section(".extflash")' in (tmp_path / "b" / "model_data.cc").read_text()


@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_full_firmware_equals_the_host_run(fused, tmp_path):
    result = run_cli("deploy", fused, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "the smallest with which the host runner's TFLM runs it" in result.output
    assert re.search(r"one inference on the emulated Cortex-M7: [\d,]+ instructions, output bytes equal to "
                     r"the host runner's TFLM's", result.output), result.output
