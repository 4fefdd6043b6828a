"""`mcuformer-tf deploy`: the generated TFLM project, the fit checks, and (with TFLM) the full firmware.

Without TFLM_ROOT and a Cortex-M7 TFLM library (TFLM_M7_LIB) the project is written and checked and
the firmware step says what it skipped; with them, the firmware is linked for the STM32F746 and one
inference in qemu must give the host TFLM run's output bytes. A 1000-class model's output (the
paper's case) must come through TFLM's 256-character log lines whole: without TFLM the generated
printing code is compiled for the host beside a MicroPrintf that formats into TFLM's buffer size.
"""
from __future__ import annotations

import dataclasses
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
from cli_runner import assert_one_line_error, run_cli

from mcuformer_tf.board import deploy, targets
from mcuformer_tf.tflm.tflite_graph import read_model

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


def test_each_board_carries_its_clock_and_core():
    assert {name: (t.clock_hz, t.core.name, t.sram, t.stack_sram, t.flash) for name, t in targets.TARGETS.items()} == {
        "stm32f427": (180_000_000, "cortex-m4", 192 << 10, 64 << 10, 1 << 20),  # 256 KiB: SRAM1-3 + CCM
        "stm32f746": (216_000_000, "cortex-m7", 320 << 10, 0, 1 << 20),
        "stm32f746-disco": (216_000_000, "cortex-m7", 320 << 10, 0, 1 << 20),
        "stm32h743": (480_000_000, "cortex-m7", 512 << 10, 128 << 10, 2 << 20)}  # AXI SRAM; DTCM stack
    assert targets.CORTEX_M4.cpu_flags[:2] == ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16")
    assert targets.CORTEX_M4.machine == "mps2-an386" and targets.CORTEX_M7.machine == "mps2-an500"


@pytest.mark.parametrize("board, cpu", [("stm32f427", "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16"),
                                        ("stm32h743", "-mcpu=cortex-m7 -mfpu=fpv5-sp-d16")])
def test_deploy_takes_the_paper_boards(fused, tmp_path, monkeypatch, board, cpu):
    monkeypatch.delenv("TFLM_M4_LIB", raising=False)
    monkeypatch.delenv("TFLM_M7_LIB", raising=False)
    result = run_cli("deploy", fused, "-o", tmp_path, "--arena", 40_000, "--target", board)
    assert result.exit_code == 0, result.output
    assert f"full firmware: skipped: set TFLM_ROOT (a tflite-micro tree) and TFLM_M{cpu[14]}_LIB" in result.output
    makefile = (tmp_path / "Makefile").read_text()
    assert f"CPU := {cpu} -mfloat-abi=hard -mthumb" in makefile and f"cortex_m7/{board}.ld" in makefile
    assert re.search(r"^latency model: [\d,]+ instructions for one inference of the fused model", result.output,
                     re.MULTILINE)
    assert targets.target("stm32f746").time_estimate(93_100_000) == \
        "431.0 ms at 216 MHz (instruction-count estimate)"
    emulator = targets.target(targets.EMULATOR)  # a profile `target` finds, not a board the tuner lists
    assert emulator.name not in targets.TARGETS and emulator.sram == 4 << 20
    assert dataclasses.replace(emulator, name="", sram=0, about="", linker_script="") == \
        dataclasses.replace(targets.TARGETS["stm32f746-disco"], name="", sram=0, about="", linker_script="")


@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_full_firmware_equals_the_host_run(fused, tmp_path):
    result = run_cli("deploy", fused, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "the smallest with which the host runner's TFLM runs it" in result.output
    ran = re.search(r"one inference on the emulated Cortex-M7: ([\d,]+) instructions, ([\d,.]+) ms at 216 MHz "
                    r"\(instruction-count estimate\); output bytes equal to the host runner's TFLM's", result.output)
    assert ran, result.output
    assert ran.group(2) == f"{int(ran.group(1).replace(',', '')) / 216e3:,.1f}"
    estimate = re.search(r"^latency model: ([\d,]+) instructions for one inference of the fused model \(Cortex-M7, "
                         r"DSP loops, ([+-][\d.]+)% against the ([\d,]+) measured\)", result.output, re.MULTILINE)
    assert estimate and estimate.group(3) == ran.group(1), result.output
    assert abs(float(estimate.group(2))) <= 5  # the latency model's bound (tools/fit_latency_model.py)


THOUSAND = 1000
LOG_BUFFER = 256  # cortex_m_generic's DebugLog formats each MicroPrintf line into this many chars


@pytest.fixture(scope="module")
def thousand_class_fused(digits_space, tmp_path_factory):
    """A fused model of the smallest digits-width subnet with a 1000-class head, fresh weights."""
    from conftest import _int8_tflite_factory

    space = dataclasses.replace(digits_space, num_classes=THOUSAND)
    folder = tmp_path_factory.mktemp("thousand")
    unfused = _int8_tflite_factory(space, folder)(space.smallest())
    path = folder / "fused.tflite"
    assert run_cli("compile", unfused, "-o", path).exit_code == 0
    return path


# What the test puts in TFLM's place: MicroPrintf formats as cortex_m_generic's DebugLog does, into a
# 256-character buffer, and prints the length the line would have had beside what the buffer kept.
LOG_STAND_IN = """
#include <cstdarg>
void MicroPrintf(const char* format, ...);
"""
PRINT_DRIVER = """
#include <cstdarg>
#include <cstdio>
#include "model_settings.h"
#include "output_print.h"
void MicroPrintf(const char* format, ...) {
  char line[%d];
  va_list args;
  va_start(args, format);
  const int wanted = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  std::printf("%%d %%s\\n", wanted, line);
}
int main() {
  static uint8_t bytes[kOutputBytes];
  if (std::fread(bytes, 1, kOutputBytes, stdin) != kOutputBytes) return 1;
  PrintOutput(bytes);
  return 0;
}
""" % LOG_BUFFER


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host g++ to compile the printing code")
def test_a_thousand_class_output_prints_in_lines_that_fit_the_log_buffer(thousand_class_fused, tmp_path):
    plan = deploy.plan(thousand_class_fused, "stm32f746", arena=64_000)
    assert plan.output.nbytes == THOUSAND and plan.output.c_type == "int8_t"
    out = tmp_path / "out"
    deploy.write(plan, thousand_class_fused, out, np.zeros(plan.input.shape, np.int8))
    (tmp_path / "stand_in/tensorflow/lite/micro").mkdir(parents=True)
    (tmp_path / "stand_in/tensorflow/lite/micro/micro_log.h").write_text(LOG_STAND_IN)
    (tmp_path / "driver.cc").write_text(PRINT_DRIVER)
    program = tmp_path / "print_output"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", f"-I{out}", f"-I{tmp_path / 'stand_in'}",
                    str(out / "output_print.cc"), str(tmp_path / "driver.cc"), "-o", str(program)], check=True)
    # Worst cases for the line lengths: every byte 0xff, and a negative top score at the last class.
    rng = np.random.default_rng(0)
    outputs = [np.full(THOUSAND, -1, np.int8), rng.integers(-128, 128, THOUSAND).astype(np.int8),
               np.concatenate([np.full(THOUSAND - 1, -128, np.int8), np.int8([-100])])]
    for output in outputs:
        printed = subprocess.run([str(program)], input=output.tobytes(), capture_output=True, check=True).stdout
        lines = [line.decode().split(" ", 1) for line in printed.splitlines()]
        assert max(int(wanted) for wanted, _ in lines) < LOG_BUFFER
        assert all(int(wanted) == len(text) for wanted, text in lines)  # nothing was cut
        text = "\n".join(text for _, text in lines)
        assert deploy.read_output(text, THOUSAND) == output.tobytes()
        best = int(np.argmax(output))
        score = np.float32(int(output[best]) - plan.output.zero_point) * np.float32(plan.output.scale)
        milli = int(score * np.float32(1000) + np.float32(-0.5 if score < 0 else 0.5))  # as the C rounds
        assert lines[-1][1] == f"top1 {best} {output[best]} {'-' if milli < 0 else ''}{abs(milli) // 1000}." \
            f"{abs(milli) % 1000:03d}"
        assert len([text for _, text in lines if text.startswith("output ")]) == -(-THOUSAND // 64)


def test_reading_the_output_refuses_a_lost_or_cut_line():
    lines = ["output_bytes 70", "output 0 " + "ab" * 64, "output 64 " + "cd" * 6]
    assert deploy.read_output("\n".join(lines), 70) == bytes([0xab] * 64 + [0xcd] * 6)
    with pytest.raises(deploy.McuformerError, match="a line was lost or cut"):
        deploy.read_output("\n".join(lines[:1] + lines[2:]), 70)
    with pytest.raises(deploy.McuformerError, match="printed 67 of its 70 output bytes"):
        deploy.read_output("\n".join(lines[:2] + ["output 64 " + "cd" * 3]), 70)
    with pytest.raises(deploy.McuformerError, match="announced output_bytes nowhere"):
        deploy.read_output("\n".join(lines[1:]), 70)


@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_a_thousand_class_firmware_equals_the_host_run(thousand_class_fused, tmp_path):
    result = run_cli("deploy", thousand_class_fused, "-o", tmp_path / "out", "--target", "stm32f746-disco")
    assert result.exit_code == 0, result.output
    assert re.search(r"output bytes equal to the host runner's TFLM's \([0-9a-f]{32}… 1,000 bytes\)",
                     result.output), result.output
    assert re.search(r"top-1 on the firmware: class \d+ \(int8 -?\d+, score -?\d+\.\d{3}\)", result.output)


@pytest.mark.slow
@pytest.mark.skipif(deploy.m7_library_missing() is not None, reason=str(deploy.m7_library_missing()))
def test_the_smallest_deit_subnet_deploys_on_the_disco_board(tmp_path):
    """The paper's case whole: the smallest deit-tiny-mcu subnet (224/32, 12 blocks, 1000 classes,
    fresh weights moved by noise) in the form `mcuformer-tf export` writes (QAT, per-tensor
    FULLY_CONNECTED kernels; ranges calibrated on digits images at 224 px, no fine-tune epochs)
    deployed for the 32F746G-DISCOVERY: the firmware's 1000 bytes equal the host runner's. (The
    converter's form of a float model keeps a multiplier and a shift per output channel of every
    linear in TFLM's persistent arena, about 171 KiB more here, and does not fit 320 KiB.)"""
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.quantize.export import calibrated_int8_tflite
    from mcuformer_tf.quantize.first_blocks import perturbed_supernet

    space = SearchSpace.load("deit-tiny-mcu")
    subnet = extract_subnet(perturbed_supernet(space), space.smallest())
    unfused = tmp_path / "unfused.tflite"
    unfused.write_bytes(calibrated_int8_tflite(subnet, load_digits(32), count=16))
    fused = tmp_path / "fused.tflite"
    assert run_cli("compile", unfused, "-o", fused).exit_code == 0
    result = run_cli("deploy", fused, "-o", tmp_path / "out", "--target", "stm32f746-disco")
    assert result.exit_code == 0, result.output
    assert "output bytes equal to the host runner's TFLM's" in result.output and "1,000 bytes" in result.output
