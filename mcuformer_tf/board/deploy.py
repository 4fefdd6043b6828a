"""`mcuformer-tf deploy`: a TFLM project fragment for a target board, from an int8 (fused) .tflite.

`plan` reads the model, lists exactly the builtins and MCUF ops it uses, sizes the arena (given, or
the smallest with which the user's TFLM runs it in the host runner, found by bisection on the 16-byte
grid; TFLM's persistent structures hold pointers, so a 64-bit host's arena is an upper bound on the
Cortex-M7's) and refuses, with the numbers, a model whose arena plus the target's stated runtime
overhead (stack and TFLM's objects outside the arena) exceeds its SRAM, or whose flatbuffer plus the
stated code size exceeds its flash (the disco profile puts the flatbuffer in its 16 MiB QSPI flash).
`write` renders the project from jinja2 templates (templates/deploy/): model data (a 16-byte aligned
C array), model_settings.h (arena, tensor shapes and quantisation), the op resolver, an example
input, the output's printing (output_print.cc: lines that fit TFLM's log buffer), main.cc and a
Makefile. `build_and_run` links it with the user's TFLM library for the core (TFLM_ROOT, TFLM_M7_LIB or
TFLM_M4_LIB) through that Makefile, runs one inference in qemu and reads the output back from the printed lines.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from mcuformer_tf.board import cortex_m7, targets
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.host_runner import SOURCES_DIR
from mcuformer_tf.tflm.runtime import check_stock_model
from mcuformer_tf.tflm.tflite_graph import read_model

TEMPLATES = Path(__file__).resolve().parent / "templates"
FILES = ("model_data.h", "model_data.cc", "model_settings.h", "op_resolver.h", "example_input.h",
         "example_input.cc", "output_print.h", "output_print.cc", "main.cc", "Makefile")
# MicroMutableOpResolver's method per builtin a ViT export holds.
BUILTIN_METHODS = {"ADD": "AddAdd", "BATCH_MATMUL": "AddBatchMatMul", "CONV_2D": "AddConv2D",
                   "FULLY_CONNECTED": "AddFullyConnected", "LOGISTIC": "AddLogistic", "MEAN": "AddMean",
                   "MUL": "AddMul", "RESHAPE": "AddReshape", "RSQRT": "AddRsqrt", "SOFTMAX": "AddSoftmax",
                   "SUB": "AddSub", "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
                   "QUANTIZE": "AddQuantize", "DEQUANTIZE": "AddDequantize"}
MCUF_OPS = ("MCUF_PATCH_EMBED", "MCUF_ATTENTION", "MCUF_MLP")
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
           np.dtype(np.int32): "int32_t", np.dtype(np.float32): "float"}
ALIGNMENT = 16


@dataclass
class TensorInfo:
    name: str
    shape: tuple
    c_type: str
    scale: float
    zero_point: int
    nbytes: int


@dataclass
class Deployment:
    name: str
    target: targets.Target
    builtins: list  # (opcode, resolver method), in first-use order
    custom: list  # MCUF op names
    arena: int
    arena_source: str
    ram: int  # arena + the target's runtime overhead
    flash: int  # internal flash: code (+ the flatbuffer, unless it goes to external flash)
    external_flash: int
    model_bytes: int
    input: TensorInfo
    output: TensorInfo


def _tensor_info(tensor) -> TensorInfo:
    if tensor.dtype not in C_TYPES:
        raise McuformerError(f"tensor {tensor.name!r} is {tensor.dtype}, which the example cannot fill")
    quantization = tensor.quantization
    scale = float(quantization.scale[0]) if quantization is not None and len(quantization.scale) else 0.0
    zero_point = int(quantization.zero_point[0]) if quantization is not None and len(quantization.zero_point) \
        else 0
    return TensorInfo(tensor.name, tuple(int(n) for n in tensor.shape), C_TYPES[tensor.dtype], scale, zero_point,
                      tensor.nbytes)


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def tuned_arena(model_path: Path) -> int:
    """The smallest arena (a multiple of 16 bytes) with which the host runner allocates and invokes."""
    from mcuformer_tf.tflm.host_runner import TflmRunError, run_host
    from mcuformer_tf.tflm.runtime import DEFAULT_ARENA

    _, used = run_host(model_path, None, DEFAULT_ARENA)
    low, high = 0, _align(used)  # low fails (or is 0), high runs
    while True:
        try:
            run_host(model_path, None, high)
            break
        except TflmRunError:
            low, high = high, high * 2
    while high - low > ALIGNMENT:
        middle = _align((low + high) // 2)
        middle = middle if middle < high else high - ALIGNMENT
        try:
            run_host(model_path, None, middle)
            high = middle
        except TflmRunError:
            low = middle
    return high


def plan(model_path: Path, target_name: str, arena: int | None = None) -> Deployment:
    """What deploying the model on the target takes; McuformerError, with the numbers, if it does not fit."""
    target = targets.target(target_name)
    model_path = Path(model_path)
    graph = read_model(model_path)
    check_stock_model(graph, allow_mcuf=True)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise McuformerError(f"{model_path} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                             "the generated example fills one input and prints one output")
    builtins, custom = [], []
    for op in graph.operators:
        if op.is_custom:
            if op.opcode not in MCUF_OPS:
                raise McuformerError(f"operator {op.index} is the custom op {op.opcode!r}, which mcuformer-tf "
                                     "has no kernel for")
            custom += [op.opcode] if op.opcode not in custom else []
        elif op.opcode not in dict(builtins):
            if op.opcode not in BUILTIN_METHODS:
                raise McuformerError(f"operator {op.index} ({op.opcode}): no MicroMutableOpResolver method "
                                     "is known for it here")
            builtins.append((op.opcode, BUILTIN_METHODS[op.opcode]))
    if arena is None:
        from mcuformer_tf.tflm.host_runner import host_runner_skip_reason

        reason = host_runner_skip_reason()
        if reason is not None:
            raise McuformerError(f"give --arena, or let the host runner find it: {reason}")
        arena, source = tuned_arena(model_path), "the smallest with which the host runner's TFLM runs it"
    else:
        arena, source = _align(arena), "given"
    model_bytes = model_path.stat().st_size
    external = model_bytes if target.external_flash else 0
    flash = target.runtime_flash + (0 if target.external_flash else model_bytes)
    deployment = Deployment(model_path.stem, target, builtins, custom, arena, source,
                            arena + target.runtime_sram, flash, external, model_bytes,
                            _tensor_info(graph.tensor(graph.inputs[0])),
                            _tensor_info(graph.tensor(graph.outputs[0])))
    problems = []
    if deployment.ram > target.sram:
        problems.append(f"SRAM: arena {arena:,} B + runtime {target.runtime_sram:,} B = {deployment.ram:,} B "
                        f"> {target.sram:,} B")
    if flash > target.flash:
        problems.append("flash: " + ("" if target.external_flash else f"model {model_bytes:,} B + ") +
                        f"code {target.runtime_flash:,} B = {flash:,} B > {target.flash:,} B")
    if external > target.external_flash and target.external_flash:
        problems.append(f"external flash: model {external:,} B > {target.external_flash:,} B")
    if problems:
        hint = "" if target.external_flash else " (try --target stm32f746-disco for the weights)"
        raise McuformerError(f"{model_path.name} does not fit {target.name}: " + "; ".join(problems) +
                             (hint if any(p.startswith("flash") for p in problems) else ""))
    return deployment


def write(deployment: Deployment, model_path: Path, out_dir: Path, example_input: np.ndarray) -> list[Path]:
    """Renders the project into out_dir; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    context = {"d": deployment, "model_data": list(Path(model_path).read_bytes()),
               "example_input": np.asarray(example_input).reshape(-1).view(np.uint8).tolist(),
               "alignment": ALIGNMENT, "weights_section": ".extflash" if deployment.target.external_flash else None,
               "op_count": len(deployment.builtins) + len(deployment.custom)}
    written = []
    for name in FILES:
        path = out_dir / name
        path.write_text(environment.get_template(f"deploy/{name}.j2").render(**context))
        written.append(path)
    return written


# The environment variable naming the user's TFLM library per core.
LIBRARY_VARIABLES = {targets.CORTEX_M7.name: "TFLM_M7_LIB", targets.CORTEX_M4.name: "TFLM_M4_LIB"}


def library_missing(core: targets.Core) -> str | None:
    """Why the full firmware for `core` cannot be linked here, or None."""
    variable = LIBRARY_VARIABLES[core.name]
    root, lib = os.environ.get("TFLM_ROOT"), os.environ.get(variable)
    if not root or not lib:
        return (f"set TFLM_ROOT (a tflite-micro tree) and {variable} (its libtensorflow-microlite.a built by "
                f"TFLM's Makefile with TARGET=cortex_m_generic TARGET_ARCH={core.name}+fp "
                f"FPU={core.cpu_flags[1].split('=')[1]})")
    if not Path(lib).is_file():
        return f"{variable} {lib} does not exist"
    return cortex_m7.toolchain_missing()


def m7_library_missing() -> str | None:
    """Why the full Cortex-M7 firmware cannot be linked here, or None."""
    return library_missing(targets.CORTEX_M7)


def read_output(printed: str, expected_bytes: int) -> bytes:
    """The output tensor's bytes from what the firmware printed: its `output <offset> <hex>` lines joined,
    after checking that they follow each other from 0 and add up to `output_bytes` = `expected_bytes`."""
    lines = [line.split() for line in printed.splitlines()]
    counts = [int(words[1]) for words in lines if len(words) == 2 and words[0] == "output_bytes"]
    if counts != [expected_bytes]:
        raise McuformerError(f"the firmware announced output_bytes {counts or 'nowhere'}, the model's output "
                             f"has {expected_bytes} bytes")
    data = b""
    for words in lines:
        if len(words) != 3 or words[0] != "output":
            continue
        if int(words[1]) != len(data):
            raise McuformerError(f"the firmware's output line at byte {words[1]} follows {len(data)} bytes: "
                                 "a line was lost or cut")
        data += bytes.fromhex(words[2])
    if len(data) != expected_bytes:
        raise McuformerError(f"the firmware printed {len(data)} of its {expected_bytes} output bytes")
    return data


@dataclass
class FirmwareRun:
    output: bytes  # the output tensor's bytes
    usage: dict  # memory region -> bytes, as the linker reports them
    instructions: int  # of the inference
    top1: str | None  # the firmware's "top1 <index> <int8> <score>" line, for an int8 output


def build_and_run(out_dir: Path, output_bytes: int, timeout: float = 300,
                  target_name: str = "stm32f746") -> FirmwareRun:
    """Links the project in out_dir with the TFLM library of the target's core (TFLM_M7_LIB,
    TFLM_M4_LIB) through its Makefile, runs it in qemu (for at most `timeout` seconds) and reads the
    `output_bytes` bytes of its output tensor from what it prints."""
    core = targets.target(target_name).core
    reason = library_missing(core)
    if reason:
        raise McuformerError(reason)
    library = os.environ[LIBRARY_VARIABLES[core.name]]
    result = subprocess.run(["make", "-C", str(out_dir), "firmware.elf", f"MCUF_DIR={SOURCES_DIR}",
                             f"TFLM_ROOT={os.environ['TFLM_ROOT']}", f"TFLM_LIB={library}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        overflow = [line.strip() for line in result.stderr.splitlines() if "overflowed" in line]
        raise McuformerError("linking the firmware failed: " +
                             (overflow or [line for line in result.stderr.splitlines() if "rror" in line] or
                              result.stderr.splitlines()[-1:] or ["?"])[0])
    usage = cortex_m7.parse_usage(result.stdout)
    ran = cortex_m7.run(Path(out_dir) / "firmware.elf", timeout, target_name)
    instructions = [line.split()[1] for line in ran.output.splitlines() if line.startswith("instructions ")]
    if ran.exit_code != 0 or not instructions:
        raise McuformerError(f"the firmware failed in qemu (exit code {ran.exit_code}): "
                             f"{ran.output.strip().splitlines()[-2:]}")
    top1 = [line.strip() for line in ran.output.splitlines() if line.startswith("top1 ")]
    return FirmwareRun(read_output(ran.output, output_bytes), usage, int(instructions[0]),
                       top1[0] if top1 else None)
