"""`mcuformer-tf compile` and `report` on a compiled model: their output, and every error as one
line, exit code 2."""
import random
import re

import pytest
from cli_runner import assert_one_line_error, run_cli

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.arena_executor import run_planned
from mcuformer_tf.memory.report import memory_report
from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model

SEED = 0  # patch 8, 3 blocks of each kind


@pytest.fixture(scope="module")
def files(digits_space, fresh_int8_tflite, tmp_path_factory):
    """The unfused ViT, and one file per way `compile` can be given the wrong thing."""
    vit = fresh_int8_tflite(digits_space.sample(random.Random(SEED)))
    raw = vit.read_bytes()
    model = ir.read(raw)
    next(op for op in model.operators if op.opcode == "LOGISTIC").opcode = "TANH"
    folder = tmp_path_factory.mktemp("cli_compile")
    contents = {"random": bytes(range(256)) * 16, "truncated": raw[:len(raw) // 2],
                "tanh": ir.write(model)}
    paths = {name: folder / f"{name}.tflite" for name in contents}
    for name, data in contents.items():
        paths[name].write_bytes(data)
    paths.update(vit=vit, missing=folder / "missing.tflite", fused=folder / "fused.tflite")
    return paths


@pytest.fixture(scope="module")
def compiled(files):
    return run_cli("compile", files["vit"], "-o", files["fused"])


def test_compile_prints_the_fused_blocks_and_both_arenas(files, compiled):
    assert compiled.exit_code == 0, compiled.output
    lines = compiled.stdout.splitlines()
    assert lines[0] == "fused 7 of 8 blocks:"
    assert lines[1] == "  patch_embed    3 operators -> MCUF_PATCH_EMBED"
    assert [line.split()[0] for line in lines[2:8]] == ["attention", "mlp"] * 3
    assert lines[8].endswith("operators stay builtin: no MCUF kernel for head blocks")
    unfused = memory_report(files["vit"]).peak
    fused = memory_report(files["fused"]).peak
    assert lines[9] == (f"arena (non-persistent): unfused {unfused:,} B (TFLM's own plan) -> "
                        f"fused {fused:,} B (offline plan): {fused / unfused:.2f} of it, "
                        f"{unfused / fused:.2f}x smaller")
    # 0.40 before the MCUF kernels took tiles of 4 tokens; their scratch (12·max(D, H) bytes for an
    # MLP) is large beside a 32-px digits block's tokens (0.51 here), small at 224 px
    assert fused < unfused * 0.55
    assert lines[10].startswith("flash (the .tflite): unfused ")
    assert lines[-1] == f"-> {files['fused']}"
    inputs = model_inputs(read_model(files["vit"]), 7)
    assert all((a == b).all() for a, b in zip(run_planned(files["fused"].read_bytes(), inputs),
                                              run_tflm(files["vit"].read_bytes(), inputs)))


def test_report_shows_the_offline_plan_of_a_compiled_model(files, compiled, tmp_path):
    png = tmp_path / "arena.png"
    result = run_cli("report", files["fused"], "--compare", files["vit"], "--png", png)
    assert result.exit_code == 0, result.output
    fused, unfused = memory_report(files["fused"]), memory_report(files["vit"])
    out = result.stdout
    assert out.count("MCUF_ATTENTION") >= 3 and "scratch not modelled" not in out
    assert f"non-persistent arena (TFLM's head): {fused.peak:,} B" in out
    row = re.search(r"^non-persistent arena \(B\) +([\d,]+) +([\d,]+) +([\d.]+)$", out, re.M)
    assert row.groups() == (f"{fused.peak:,}", f"{unfused.peak:,}",
                            f"{fused.peak / unfused.peak:.2f}")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("name, fragment", [
    ("missing", "No such file or directory"),
    ("random", "not a TFLite flatbuffer (no 'TFL3' identifier)"),
    ("truncated", "malformed TFLite flatbuffer"),
    ("tanh", "is in no block the compiler recognises; as mlp: "),
    ("fused", "already holds MCUF operators: compile the unfused int8 model"),
])
def test_compile_errors_are_one_line(files, compiled, tmp_path, name, fragment):
    output = tmp_path / "out.tflite"
    assert_one_line_error(run_cli("compile", files[name], "-o", output), fragment)
    assert not output.exists()
