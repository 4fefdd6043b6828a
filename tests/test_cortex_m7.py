"""The MCUF kernels on an emulated Cortex-M7 (qemu mps2-an500) and Cortex-M4 (mps2-an386) give the host
build's bytes.

The kernel test firmware is built with the DSP loops and with the portable C ones, linked with
STM32F746's sizes (and with the DSP loops for the Cortex-M4, linked with STM32F427's), and run on
every kernel of two exported digits ViTs (1 and 2 heads, dense and low-rank linear layers, patches
of 4 and 8, tokens larger and smaller than the image) and of the first with packed INT4 filters, on
the linear inner loops and on dot products with zero points at the int8 ends and odd depths (INT4
rows starting mid-byte too); each case's output bytes must equal the host build's (ctypes). So
must the DSP build's on the paper-scale first blocks (quantize.first_blocks): the one with the
fewest tokens in `make test`, all four in `make test-all`. The linker scripts must
refuse what does not fit, and the instruction counter must count instructions.
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from mcuformer_tf.board import cortex_m7, kernel_test, targets
from mcuformer_tf.errors import McuformerError

pytestmark = pytest.mark.skipif(cortex_m7.toolchain_missing() is not None,
                                reason=str(cortex_m7.toolchain_missing()))
SEEDS = (4, 7)  # digits configs: 2 heads, low-rank, patch 4, 64 tokens of 64; 1 head, dense, patch 8


@pytest.fixture(scope="module")
def cases(fresh_int8_tflite, digits_space):
    from supernets import on_int4_grid

    from mcuformer_tf.compiler.int4_weights import pack_int4_model

    found = []
    for seed in SEEDS:
        path = fresh_int8_tflite(digits_space.sample(random.Random(seed)))
        image = np.random.default_rng(seed).integers(-128, 128, (1, 32, 32, 3), np.int8)
        found += kernel_test.model_cases(path.read_bytes(), image, prefix=f"seed{seed}", seed=seed)
        if seed == SEEDS[0]:  # the same subnet with packed INT4 filters
            found += kernel_test.model_cases(pack_int4_model(on_int4_grid(path.read_bytes())), image,
                                             prefix="int4", seed=seed)
    rng = np.random.default_rng(0)  # the dot product's edges: zero points at the int8 ends, odd depths
    found += [kernel_test.synthetic_linear_case("edge.a", 67, 9, 128, -127, rng),
              kernel_test.synthetic_linear_case("edge.b", 5, 3, -127, 128, rng)]
    # INT4: rows starting mid-byte (odd depth), a partial tile, an odd count of 8-value blocks and a rest
    found += [kernel_test.synthetic_linear_case("edge.int4a", 67, 9, 128, 0, rng, weight_bits=4),
              kernel_test.synthetic_linear_case("edge.int4b", 13, 5, -127, 5, rng, rows=3, weight_bits=4),
              kernel_test.synthetic_linear_case("int4.linear204", 204, 17, 3, 0, rng, weight_bits=4)]
    return found


@pytest.fixture(scope="module")
def runs(cases, tmp_path_factory):
    build = tmp_path_factory.mktemp("kernel_test")
    return {dsp: kernel_test.run(cases, build, dsp=dsp) for dsp in (True, False)}


def test_every_kernel_on_the_cortex_m7_gives_the_host_bytes(cases, runs):
    kinds = {case.kind for case in cases}
    assert kinds == {"patch_embed", "attention", "mlp", "linear", "matmul"}
    # inner loops of 3 models, seed 4's 3 blocks int8 and INT4, seed 7's 2, edge cases int8 and INT4
    assert len(cases) == 3 * 4 + 2 * 7 + 5 + 2 + 3
    for dsp, result in runs.items():
        assert result.exit_code == 0
        assert [r.name for r in result.cases] == [c.name for c in cases]
        for case, ran in zip(cases, result.cases):
            assert (ran.status, ran.output) == ("ok", case.expected.tobytes()), (dsp, case.name)
            assert ran.instructions > case.macs / 2  # SMLAD does 2 MACs: a count below is no count
        assert result.usage["FLASH"] <= 1024 * 1024 and result.usage["RAM"] <= 320 * 1024


CHEAP_BLOCK = "240/24 e192 h3 mlp4 r0.5"  # 100 tokens: the cheapest of the four to convert and emulate


@pytest.fixture(scope="module")
def deit_supernet():
    from mcuformer_tf.nas.search_space import SearchSpace
    from mcuformer_tf.quantize import first_blocks

    return first_blocks.fresh_supernet(SearchSpace.load(first_blocks.SPACE))


@pytest.mark.parametrize("label", [pytest.param(label, marks=() if label == CHEAP_BLOCK else pytest.mark.slow)
                                   for label in ("224/16 e192 h3 mlp4 r0.5", "224/16 e192 h3 mlp4 r0.95",
                                                 CHEAP_BLOCK, "224/16 e168 h3 mlp3.5 r0.4")])
def test_a_paper_scale_first_block_on_the_cortex_m7_gives_the_host_bytes(label, deit_supernet, tmp_path):
    from mcuformer_tf.quantize import first_blocks

    config = first_blocks.FIRST_BLOCKS[label]
    model = first_blocks.converted_model(deit_supernet, config)
    image = np.random.default_rng(1).integers(-128, 128, (1, config.image_size, config.image_size, 3), np.int8)
    cases = kernel_test.model_cases(model, image, prefix="paper")
    assert [c.kind for c in cases] == ["patch_embed", "attention", "mlp", "linear", "linear", "matmul", "matmul"]
    assert cases[1].params.tokens == config.num_tokens and cases[1].params.depth == config.embed_dim
    result = kernel_test.run(cases, tmp_path, dsp=True)
    assert result.exit_code == 0
    for case, ran in zip(cases, result.cases, strict=True):
        assert (ran.name, ran.status, ran.output) == (case.name, "ok", case.expected.tobytes())


def test_every_kernel_on_the_cortex_m4_gives_the_host_bytes(cases, tmp_path):
    import subprocess

    machines = subprocess.run(["qemu-system-arm", "-machine", "help"], capture_output=True, text=True).stdout
    assert re.search(r"^mps2-an386 +ARM MPS2 with AN386 FPGA image for Cortex-M4$", machines, re.MULTILINE)
    result = kernel_test.run(cases, tmp_path, "stm32f427")  # -mcpu=cortex-m4 with DSP, on mps2-an386
    assert result.exit_code == 0
    for case, ran in zip(cases, result.cases, strict=True):
        assert (ran.name, ran.status, ran.output) == (case.name, "ok", case.expected.tobytes())
    instructions, measured = result.calibration
    assert 0 <= measured - instructions <= 10 * cortex_m7.INSTRUCTIONS_PER_TICK  # an386 clocks 25 MHz too
    assert result.usage["FLASH"] <= 1024 * 1024 and result.usage["RAM"] <= 192 * 1024
    assert result.usage["CCM"] == 16 * 1024  # the stack, in the core-coupled RAM


def test_the_dsp_loops_take_fewer_instructions(cases, runs):
    for case, dsp, portable in zip(cases, runs[True].cases, runs[False].cases):
        if case.name.startswith("edge."):  # a few elements: no loop to speak of
            continue
        if case.kind in ("linear", "matmul"):
            assert dsp.instructions < 0.75 * portable.instructions, case.name
        else:
            assert dsp.instructions < portable.instructions, case.name


def test_the_counter_counts_instructions(runs):
    instructions, measured = runs[True].calibration
    assert instructions == 200_000
    assert 0 <= measured - instructions <= 10 * cortex_m7.INSTRUCTIONS_PER_TICK  # the calls around it


def test_the_linker_proves_fit(tmp_path):
    source = tmp_path / "big.c"
    source.write_text('#include <stdint.h>\n'
                      'static volatile int8_t buffer[300 * 1024];\n'
                      '__attribute__((section(".extflash"), used)) static const int8_t weights[2 << 20] = {1};\n'
                      'int main(void) { buffer[0] = weights[0]; return buffer[0] - 1; }\n')
    with pytest.raises(McuformerError, match=r"does not fit stm32f746: .*EXTFLASH overflowed by 2097152 bytes"):
        cortex_m7.build([source], tmp_path / "f.elf", "stm32f746")
    disco = cortex_m7.build([source], tmp_path / "d.elf", "stm32f746-disco")
    assert disco.usage["EXTFLASH"] == 2 << 20 and disco.usage["RAM"] > 300 * 1024
    assert cortex_m7.run(disco.elf).exit_code == 0  # the weights load at the external flash's address
    source.write_text(source.read_text().replace("300 * 1024", "310 * 1024"))
    with pytest.raises(McuformerError, match=r"does not fit stm32f746-disco: RAM overflowed by \d+ bytes"):
        cortex_m7.build([source], tmp_path / "d.elf", "stm32f746-disco")


def test_the_emulator_profile_runs_what_the_chip_cannot_hold(tmp_path):
    source = tmp_path / "big.c"  # 4000 KiB of RAM touched, the stack at the top of qemu's 4 MiB
    source.write_text('#include <stdint.h>\n'
                      'static volatile int8_t buffer[4000 * 1024];\n'
                      'int main(void) {\n'
                      '    for (unsigned i = 0; i < sizeof buffer; i += 4096) buffer[i] = 1;\n'
                      '    buffer[sizeof buffer - 1] = 2;\n'
                      '    return buffer[0] + buffer[sizeof buffer - 1] - 3;\n'
                      '}\n')
    with pytest.raises(McuformerError, match=r"does not fit stm32f746-disco: RAM overflowed"):
        cortex_m7.build([source], tmp_path / "d.elf", "stm32f746-disco")
    emulator = cortex_m7.build([source], tmp_path / "e.elf", targets.EMULATOR)
    assert 4000 * 1024 < emulator.usage["RAM"] <= 4 * 1024 * 1024
    assert cortex_m7.run(emulator.elf).exit_code == 0


def test_cli_kernel_test(fresh_int8_tflite, digits_space, tmp_path):
    from cli_runner import assert_one_line_error, run_cli

    model = fresh_int8_tflite(digits_space.sample(random.Random(SEEDS[1])))
    result = run_cli("kernel-test", model, "--build-dir", tmp_path / "build", "--target", "stm32f746-disco")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.endswith("same bytes") for line in lines) == 5 + 4
    assert "linked for stm32f746-disco: FLASH" in lines[-1] and "EXTFLASH 0 B" not in lines[-1]
    blocks = [int(line.split()[1].replace(",", "")) for line in lines if re.match(r"m\.[a-z_]+\d ", line)]
    total = re.fullmatch(r"fused kernels of one inference: ([\d,]+) instructions \(DSP loops, -icount shift=0\), "
                         r"([\d,.]+) ms at 216 MHz \(instruction-count estimate\)", lines[-2])
    assert len(blocks) == 5 and int(total.group(1).replace(",", "")) == sum(blocks)
    assert total.group(2) == f"{sum(blocks) / 216e3:,.1f}"
    fused = tmp_path / "fused.tflite"
    assert run_cli("compile", model, "-o", fused).exit_code == 0
    assert_one_line_error(run_cli("kernel-test", fused), "already holds MCUF operators")


def test_the_counter_counts_across_systick_periods(tmp_path):
    source = tmp_path / "spin.c"  # 800 M instructions: SysTick's 24 bits wrap once (every 671 M)
    source.write_text('#include "m7_runtime.h"\n'
                      'int main(void) {\n'
                      '    const uint64_t start = mcuf_m7_ticks();\n'
                      '    mcuf_m7_spin(400000000u);\n'
                      '    mcuf_m7_write_u64(mcuf_m7_ticks() - start);\n'
                      '    return 0;\n'
                      '}\n')
    ran = cortex_m7.run(cortex_m7.build([source], tmp_path / "spin.elf").elf)
    assert ran.exit_code == 0
    ticks = int(ran.output.strip())
    assert 0 <= ticks * cortex_m7.INSTRUCTIONS_PER_TICK - 800_000_000 <= 10 * cortex_m7.INSTRUCTIONS_PER_TICK
