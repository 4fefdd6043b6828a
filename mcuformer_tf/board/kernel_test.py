"""The kernel test firmware: every MCUF kernel of real exports, run on the emulated Cortex-M7 and on
the host.

`model_cases(model_bytes, image)` reads an unfused int8 .tflite (int8 or packed INT4 weights), finds
its blocks (compiler.match), builds each block's kernel parameters with compiler.kernels (as TFLM's
Prepare derives them), takes
each kernel's input from the numpy TFLM model's run of `image` and its expected output from the host
build of libmcuf (ctypes), and adds cases for the linear inner loops of the first attention and MLP
(a low-rank or dense layer, q·kᵀ and probs·v rows, v transposed as the kernel keeps it). `render`
writes them as C (jinja2 template templates/cortex_m7/kernel_vectors.c.j2: the parameter structs
with their constant arrays, inputs, expected bytes, one arena); `run` builds
tflm_custom_ops/cortex_m7/kernel_test.c with it (cortex_m7), boots it in qemu and returns per case
the status, the output bytes it computed and its instruction count, with the MACs the unfused graph
does for the same work.
"""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from mcuformer_tf.board import cortex_m7, targets
from mcuformer_tf.compiler import ir, kernel_params, kernels, match
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import run_graph
from mcuformer_tf.tflm.int4 import pack_int4
from mcuformer_tf.tflm.tflite_graph import read_model

TEMPLATES = Path(__file__).resolve().parent / "templates"
C_TYPES = {"patch_embed": "mcuf_patch_embed_params", "attention": "mcuf_attention_params",
           "mlp": "mcuf_mlp_params", "linear": "mcuf_fc_layer", "matmul": "mcuf_batch_matmul_params"}
ELEMENT_TYPES = {ctypes.c_int8: ("int8_t", np.int8), ctypes.c_int32: ("int32_t", np.int32)}
TILE = 4  # MCUF_TILE (mcuf/mcuf.h): rows the linear inner loop computes together
BUILDERS = {"patch_embed": kernels.patch_embed_kernel, "attention": kernels.attention_kernel,
            "mlp": kernels.mlp_kernel}


@dataclass
class Case:
    name: str
    kind: str  # a key of C_TYPES
    params: ctypes.Structure
    arrays: list  # the numpy arrays params points into (kept alive with it)
    input: np.ndarray  # int8, flat
    expected: np.ndarray  # int8, flat: the host build's output
    macs: int  # multiply-accumulates of the unfused graph's operators for the same result
    rhs: np.ndarray | None = None  # matmul only
    columns: int = 0  # matmul only


def _linear_macs(linear) -> int:
    return sum(layer.input_depth * layer.output_depth for layer in linear.layers[:linear.num_layers])


def _kernel_macs(kind: str, p) -> int:
    if kind == "patch_embed":
        return (p.image_height // p.patch) * (p.image_width // p.patch) * p.depth * p.patch**2 * p.channels
    if kind == "attention":
        return p.tokens * (_linear_macs(p.qkv) + _linear_macs(p.proj)) + \
            2 * p.heads * p.tokens * p.tokens * p.head_dim
    return 0  # mlp: scaled by the token count in _block_case


def _block_case(name: str, kind: str, graph, ops, values: dict) -> Case:
    kernel = BUILDERS[kind](graph, ops)
    given = np.ascontiguousarray(values[kernel.input_tensor], np.int8).reshape(-1)
    expected = np.ascontiguousarray(values[kernel.output_tensor], np.int8).reshape(-1)
    if kind == "patch_embed":
        host = np.zeros(expected.size, np.int8)
        kernel.run(given.copy(), host)
    else:
        host = given.copy()
        kernel.run(host)
    if not np.array_equal(host, expected):  # held by tests/test_mcuf_kernels.py; cheap to recheck
        raise McuformerError(f"{name}: the host kernel differs from the numpy TFLM model")
    p = kernel.params
    macs = _kernel_macs(kind, p) if kind != "mlp" else \
        kernel.num_tokens * (_linear_macs(p.fc1) + _linear_macs(p.fc2))
    return Case(name, kind, p, kernel._arrays, given, host, macs)


def _linear_case(name: str, layer, rows: np.ndarray, arrays: list) -> Case:
    """A FULLY_CONNECTED on rows [n, depth] (the firmware runs them a tile at a time); expected: the
    host's one-row function on each row."""
    rows = np.ascontiguousarray(np.reshape(rows, (-1, rows.shape[-1]))[:, :layer.input_depth], np.int8)
    out = np.zeros((len(rows), layer.output_depth), np.int8)
    for x, y in zip(rows, out):
        kernel_params.load().mcuf_fully_connected_row(
            ctypes.byref(layer.params), x.ctypes.data_as(kernel_params.P8), layer.input_depth, layer.weights,
            layer.bias, layer.output_depth, y.ctypes.data_as(kernel_params.P8))
    return Case(name, "linear", layer, arrays, rows.reshape(-1), out.reshape(-1),
                rows.size * layer.output_depth)


def synthetic_linear_case(name: str, depth: int, outputs: int, input_offset: int, weights_offset: int,
                          rng, rows: int = TILE, weight_bits: int = 8) -> Case:
    """A FULLY_CONNECTED on `rows` rows of random weights [outputs, depth] (int8, or with weight_bits 4
    values in [-8, 7] packed as INT4) and int8 input, per-tensor requantised: for the dot product's edge
    cases (zero points at the int8 ends, odd depths, a partial tile) and for timing it."""
    if weight_bits == 4:
        weights = np.frombuffer(pack_int4(rng.integers(-8, 8, (outputs, depth))), np.int8).copy()
    else:
        weights = rng.integers(-128, 128, (outputs, depth), dtype=np.int8)
    params = kernel_params.FcParams(input_offset=input_offset, weights_offset=weights_offset, output_offset=-2,
                                   activation_min=-128, activation_max=127, multiplier=1 << 30, shift=-9,
                                   weight_bits=weight_bits)
    layer = kernel_params.FcLayer(params, weights.ctypes.data_as(kernel_params.P8), None, depth, outputs)
    return _linear_case(name, layer, rng.integers(-128, 128, (rows, depth), dtype=np.int8), [weights])


def _matmul_case(name: str, params, depth: int, columns: int, rng, rows: int = TILE) -> Case:
    """A BATCH_MATMUL of `rows` random lhs rows (a tile at a time when rhs is transposed)."""
    lhs = rng.integers(-128, 128, (rows, depth), dtype=np.int8)
    rhs = rng.integers(-128, 128, depth * columns, dtype=np.int8)
    out = np.zeros((rows, columns), np.int8)
    for x, y in zip(lhs, out):
        kernel_params.load().mcuf_batch_matmul_row(
            ctypes.byref(params), x.ctypes.data_as(kernel_params.P8), depth,
            rhs.ctypes.data_as(kernel_params.P8), columns, y.ctypes.data_as(kernel_params.P8))
    return Case(name, "matmul", params, [], lhs.reshape(-1), out.reshape(-1), rows * depth * columns, rhs,
                columns)


def model_cases(model_bytes: bytes, image: np.ndarray, prefix: str = "m", inner_loops: bool = True,
                seed: int = 0) -> list[Case]:
    """The kernel cases of one unfused int8 model on one int8 image; with inner_loops, also its first
    attention's and MLP's first linear layer, and a q·kᵀ and a probs·v row of the first attention."""
    graph = read_model(model_bytes)
    values = run_graph(graph, np.asarray(image, np.int8).reshape(graph.tensor(graph.inputs[0]).shape))
    cases, start, seen = [], 0, {}
    for block in match.match(ir.read(model_bytes)):
        ops = graph.operators[start:start + len(block.ops)]
        start += len(block.ops)
        if block.kind not in BUILDERS:
            continue
        number = seen[block.kind] = seen.get(block.kind, -1) + 1
        cases.append(_block_case(f"{prefix}.{block.kind}{number}", block.kind, graph, ops, values))
    if inner_loops:
        rng = np.random.default_rng(seed)
        for kind, linear in (("attention", "qkv"), ("mlp", "fc1")):
            case = next(c for c in cases if c.kind == kind)
            layer = getattr(case.params, linear).layers[0]
            tokens = case.input.reshape(-1, case.params.depth)[:TILE]
            cases.append(_linear_case(f"{prefix}.{kind}0.{linear}", layer, tokens, case.arrays))
        p = next(c for c in cases if c.kind == "attention").params
        cases.append(_matmul_case(f"{prefix}.attention0.scores", p.scores, p.head_dim, p.tokens, rng))
        context = kernel_params.BatchMatmulParams.from_buffer_copy(p.context)
        context.rhs_transposed = 1  # as MCUF_ATTENTION runs it: V transposed in its scratch
        cases.append(_matmul_case(f"{prefix}.attention0.context", context, p.tokens, p.head_dim, rng))
    return cases


# --- C rendering ----------------------------------------------------------------------------------

class _Arrays:
    """Constant arrays by address, each rendered once; pointers become `symbol + offset`."""

    def __init__(self):
        self.rendered: list[dict] = []
        self._spans: list[tuple[int, int, str, int]] = []  # (start, end, symbol, itemsize)

    def add(self, array: np.ndarray, c_type: str, section: str | None = None) -> str:
        start = array.ctypes.data
        for begin, end, symbol, _ in self._spans:
            if begin == start and end == start + array.nbytes:
                return symbol
        symbol = f"mcuf_array{len(self.rendered)}"
        self._spans.append((start, start + array.nbytes, symbol, array.itemsize))
        self.rendered.append({"symbol": symbol, "type": c_type, "values": array.reshape(-1).tolist(),
                              "section": section})
        return symbol

    def pointer(self, address: int, c_type: str, candidates: list, section: str | None) -> str:
        for array in candidates:
            if array.ctypes.data <= address < array.ctypes.data + array.nbytes:
                symbol = self.add(array, c_type, section)
                offset = (address - array.ctypes.data) // array.itemsize
                return f"{symbol} + {offset}" if offset else symbol
        raise McuformerError(f"a {c_type} pointer of the kernel parameters points outside their arrays")


def _tree(value, arrays: _Arrays, candidates: list, section: str | None) -> dict:
    """A ctypes value as a tree the template renders as a C initializer."""
    if isinstance(value, ctypes.Structure):
        return {"struct": [(name, _tree(getattr(value, name), arrays, candidates, section))
                           for name, _ in value._fields_]}
    if isinstance(value, ctypes.Array):
        return {"array": [_tree(item, arrays, candidates, section) for item in value]}
    if isinstance(value, ctypes._Pointer):
        address = ctypes.cast(value, ctypes.c_void_p).value
        if address is None:
            return {"value": "NULL"}
        c_type, _ = ELEMENT_TYPES[value._type_]
        return {"value": arrays.pointer(address, c_type, candidates, section)}
    return {"value": str(int(value))}


def render(cases: list[Case], weights_section: str | None = None) -> str:
    """C source of the cases for kernel_test.c; weights_section places the kernels' constant arrays
    (".extflash": the disco profile's external flash)."""
    arrays, rendered = _Arrays(), []
    arena = 16
    for case in cases:
        params = _tree(case.params, arrays, case.arrays, weights_section)
        rhs = arrays.add(case.rhs, "int8_t") if case.rhs is not None else None
        rendered.append({"name": case.name, "kind": "MCUF_TEST_" + case.kind.upper(),
                         "c_type": C_TYPES[case.kind], "params": params,
                         "input": arrays.add(case.input, "int8_t"), "input_bytes": case.input.size,
                         "expected": arrays.add(case.expected, "int8_t"), "output_bytes": case.expected.size,
                         "rhs": rhs, "columns": case.columns})
        arena = max(arena, _arena_bytes(case))
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True)
    return environment.get_template("cortex_m7/kernel_vectors.c.j2").render(
        cases=rendered, arrays=arrays.rendered, arena_bytes=arena)


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


def _arena_bytes(case: Case) -> int:
    """Bytes kernel_test.c's run_case lays out for the case."""
    if case.kind == "patch_embed":
        size = kernel_params.load().mcuf_patch_embed_get_buffer_size(ctypes.byref(case.params))
        return _round16(max(case.input.size, case.expected.size)) + size
    if case.kind in ("attention", "mlp"):
        size = getattr(kernel_params.load(), f"mcuf_{case.kind}_get_buffer_size")(ctypes.byref(case.params))
        return _round16(case.input.size) + size
    depth = case.input.size * case.columns // case.expected.size if case.kind == "matmul" else \
        case.params.input_depth
    return _round16(case.input.size) + _round16(case.expected.size) + 8 * depth


# --- building and running -------------------------------------------------------------------------

@dataclass
class CaseResult:
    name: str
    status: str  # ok, MISMATCH or ERROR, as the firmware saw it
    output: bytes  # the bytes the Cortex-M7 computed
    instructions: int  # SysTick ticks x INSTRUCTIONS_PER_TICK (a resolution of 40 instructions)


@dataclass
class Result:
    cases: list[CaseResult]
    exit_code: int
    calibration: tuple[int, int]  # (instructions of a known loop, what the counter measured)
    usage: dict = field(default_factory=dict)  # memory region -> bytes used, from the linker


_CASE_LINE = re.compile(r"^case (\S+) (ok|MISMATCH|ERROR) ticks=(\d+) out=([0-9a-f]*)$", re.MULTILINE)
_CALIBRATION = re.compile(r"^calibration instructions=(\d+) ticks=(\d+)$", re.MULTILINE)


def run(cases: list[Case], build_dir: Path, target_name: str = "stm32f746", dsp: bool = True) -> Result:
    """Builds the kernel test firmware for the cases and runs it in qemu."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    chip = targets.target(target_name)
    vectors = build_dir / "kernel_vectors.c"
    vectors.write_text(render(cases, ".extflash" if chip.external_flash else None))
    firmware = cortex_m7.build([cortex_m7.RUNTIME_DIR / "kernel_test.c", vectors],
                               build_dir / f"kernel_test_{'dsp' if dsp else 'portable'}.elf", target_name, dsp=dsp)
    ran = cortex_m7.run(firmware.elf, target_name=target_name)
    results = [CaseResult(name, status, bytes.fromhex(hex_bytes), int(ticks) * cortex_m7.INSTRUCTIONS_PER_TICK)
               for name, status, ticks, hex_bytes in _CASE_LINE.findall(ran.output)]
    calibration = _CALIBRATION.search(ran.output)
    if len(results) != len(cases) or calibration is None:
        raise McuformerError(f"the kernel test firmware stopped early (exit code {ran.exit_code}): "
                             f"{ran.output.strip().splitlines()[-1:]}")
    measured = int(calibration.group(2)) * cortex_m7.INSTRUCTIONS_PER_TICK
    return Result(results, ran.exit_code, (int(calibration.group(1)), measured), firmware.usage)
