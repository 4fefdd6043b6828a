"""libmcuf's int8 row primitives and its fused kernels equal the numpy model of TFLM, byte for byte.

Link (3) of the chain of trust (DESIGN.md §7). Each primitive of mcuf/int8_ops.h is held against
the tflm_arith function of its builtin, on hypothesis-drawn shapes and quantisations (parameters
from tflm_arith's own prepare of a one-operator graph). MCUF_MLP, MCUF_ATTENTION and
MCUF_PATCH_EMBED are held against run_graph on every such subgraph of exported digits ViTs (MLP:
dense and low-rank, RESHAPEs where the converter put them; attention: 1 and 2 heads, dense and
low-rank qkv and proj, with and without biases and the head-merging TRANSPOSE/RESHAPE; patch
embedding: patches of 4 and 8, tokens larger and smaller than the image; LayerNorms with and
without MUL(gamma) and ADD(beta)), on the values of random images and on random inputs. Every
buffer the C touches sits between 64 guard bytes that must survive; inputs must be unchanged where
nothing may overwrite them; scratch is exactly the kernel's *_get_buffer_size bytes (poisoned,
guarded, every byte used). MLP and attention results overwrite their input tokens; the patch
embedding is run into a separate buffer and into tokens sharing memory with the image, at
mcuf_patch_embed_output_offset and at the header's bound (one byte beyond is refused).

`test_this_module_again_under_sanitizers` reruns the module in a child pytest on the ASan+UBSan
build (MCUF_TEST_SANITIZE=1; the cases are handed over in the directory MCUF_TEST_BLOCK_CASES),
where buffers of exactly the kernel's sizes also let ASan see any read beyond them.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcuformer_tf.compiler import kernel_params, row_ops
from mcuformer_tf.compiler import kernels as mcuf_kernels
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.fused_plan import TILE
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.tflm import host_runner
from mcuformer_tf.tflm.arith import elementwise, fully_connected, logistic, prepare, reduce, run_graph, softmax
from mcuformer_tf.tflm.arith.executor import KERNELS
from mcuformer_tf.tflm.tflite_graph import Graph, Operator, Quantization, Tensor, read_model

SANITIZE = os.environ.get("MCUF_TEST_SANITIZE") == "1"
CASES_DIR_VARIABLE = "MCUF_TEST_BLOCK_CASES"
PRIMITIVES = settings(max_examples=60, deadline=None)
GUARD = np.resize(np.frombuffer(b"\xde\xad\xbe\xef", np.int8), 64)
MLP_SEEDS = (5, 7, 8, 9)  # digits configs, 16 or 64 tokens, dense and low-rank MLPs: 13 blocks
# Attention and patch embedding: those, and a config whose tokens (64 x 64) outgrow the image: 16 blocks,
# 1 and 2 heads, dense and low-rank qkv and proj, patches of 4 and 8.
BLOCK_SEEDS = (4, 5, 7, 8, 9)
AFFINE_SEED = 0  # low-rank, 2 heads, 3 blocks: LayerNorm gamma and beta, biases made random (_affine_model)
IMAGES_PER_MODEL = 2

scales = st.floats(2.0**-10, 2.0**2)
zero_points = st.integers(-128, 127)
activations = st.sampled_from([0, 1, 2, 3])  # NONE, RELU, RELU_N1_TO_1, RELU6
seeds = st.integers(0, 2**32 - 1)


class Guarded:
    """An int8 array inside a buffer with 64 pattern bytes before and after it."""

    def __init__(self, values):
        values = np.asarray(values, np.int8)
        self.buffer = np.concatenate([GUARD, values.reshape(-1), GUARD])
        self.array = self.buffer[GUARD.size:GUARD.size + values.size].reshape(values.shape)

    def intact(self) -> bool:
        return np.array_equal(self.buffer[:GUARD.size], GUARD) and np.array_equal(self.buffer[-GUARD.size:], GUARD)


def one_op_graph(opcode: str, inputs: list, output: Tensor, options=None) -> tuple[Graph, Operator]:
    """A graph of one operator on `inputs` (Tensors indexed 0..) writing `output` (indexed last)."""
    tensors = [Tensor(i, f"t{i}", t.shape, t.dtype, t.quantization, t.data)
               for i, t in enumerate(inputs + [output])]
    options = {"fused_activation_function": 0, **(options or {})}
    op = Operator(0, opcode, tuple(range(len(inputs))), (len(inputs),), options)
    return Graph(tensors=tensors, operators=[op], inputs=(), outputs=(), metadata={}, size=0, buffer_bytes=0), op


def int8_tensor(shape, scale, zero_point=0, data=None) -> Tensor:
    quantization = Quantization(np.atleast_1d(np.asarray(scale, np.float32)),
                                np.zeros(np.size(scale), np.int64) + zero_point)
    return Tensor(0, "", tuple(shape), np.dtype(np.int8), quantization, data)


def random_int8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape, dtype=np.int8)


# --- primitives ---------------------------------------------------------------------------------

@PRIMITIVES
@given(seed=seeds, depth=st.integers(1, 96), outputs=st.integers(1, 40), s_in=scales,
       gain=st.floats(2.0**-16, 2.0**2), zp_in=zero_points, zp_out=zero_points, per_channel=st.booleans(),
       zp_weights=st.integers(-10, 10), with_bias=st.booleans(), activation=activations)
def test_fully_connected_row(seed, depth, outputs, s_in, gain, zp_in, zp_out, per_channel, zp_weights,
                             with_bias, activation):
    rng = np.random.default_rng(seed)
    s_weights = (rng.uniform(0.002, 0.05, outputs) if per_channel else np.array([0.01])).astype(np.float32)
    weights = random_int8(rng, (outputs, depth))
    s_out = float(s_in * np.mean(s_weights) / gain)
    tensors = [int8_tensor((1, depth), s_in, zp_in),
               int8_tensor((outputs, depth), s_weights, 0 if per_channel else zp_weights, weights)]
    bias = None
    if with_bias:
        bias = rng.integers(-(1 << 16), 1 << 16, outputs).astype(np.int32)
        tensors.append(Tensor(0, "", (outputs,), np.dtype(np.int32),
                              Quantization(np.float32(s_in) * s_weights, np.zeros(s_weights.size, np.int64)),
                              bias))
    graph, op = one_op_graph("FULLY_CONNECTED", tensors, int8_tensor((1, outputs), s_out, zp_out),
                             {"fused_activation_function": activation, "keep_num_dims": False})
    params = prepare(graph, op)
    x = Guarded(random_int8(rng, depth))
    w, out = Guarded(weights), Guarded(np.zeros(outputs, np.int8))
    row_ops.fully_connected_row(params, x.array, w.array, bias, out=out.array, sanitize=SANITIZE)
    expected = fully_connected.fully_connected(params, x.array[None], weights, bias).reshape(-1)
    assert np.array_equal(out.array, expected)
    assert np.array_equal(w.array, weights) and x.intact() and w.intact() and out.intact()


@PRIMITIVES
@given(opcode=st.sampled_from(["ADD", "SUB", "MUL"]), seed=seeds, size=st.integers(1, 80),
       layout=st.sampled_from(["row, row", "row, scalar", "scalar, row"]), s1=scales,
       s2_ratio=st.floats(2.0**-4, 2.0**4), s_out_ratio=st.floats(2.0**-4, 2.0**4), zp1=zero_points,
       zp2=zero_points, zp_out=zero_points, activation=activations)
def test_binary_rows(opcode, seed, size, layout, s1, s2_ratio, s_out_ratio, zp1, zp2, zp_out, activation):
    rng = np.random.default_rng(seed)
    sizes = [size if part == "row" else 1 for part in layout.split(", ")]
    s2 = s1 * s2_ratio
    s_out = (s1 * s2 if opcode == "MUL" else max(s1, s2)) * s_out_ratio
    graph, op = one_op_graph(opcode, [int8_tensor((sizes[0],), s1, zp1), int8_tensor((sizes[1],), s2, zp2)],
                             int8_tensor((size,), s_out, zp_out), {"fused_activation_function": activation})
    params = prepare(graph, op)
    values = [random_int8(rng, n) for n in sizes]
    x1, x2, out = Guarded(values[0]), Guarded(values[1]), Guarded(np.zeros(size, np.int8))
    function = {"ADD": row_ops.add_row, "SUB": row_ops.sub_row, "MUL": row_ops.mul_row}[opcode]
    function(params, x1.array, x2.array, out=out.array, sanitize=SANITIZE)
    expected = {"ADD": elementwise.add, "SUB": elementwise.sub, "MUL": elementwise.mul}[opcode](params, *values)
    assert np.array_equal(out.array, expected)
    assert np.array_equal(x1.array, values[0]) and np.array_equal(x2.array, values[1])
    assert x1.intact() and x2.intact() and out.intact()


def test_binary_rows_may_write_over_their_row_operand():
    graph, op = one_op_graph("MUL", [int8_tensor((48,), 0.02, 3), int8_tensor((48,), 0.01, -7)],
                             int8_tensor((48,), 0.005, 1))
    params = prepare(graph, op)
    rng = np.random.default_rng(0)
    x1, x2 = random_int8(rng, 48), random_int8(rng, 48)
    expected = elementwise.mul(params, x1, x2)
    in_place = Guarded(x1)
    row_ops.mul_row(params, in_place.array, x2, out=in_place.array, sanitize=SANITIZE)
    assert np.array_equal(in_place.array, expected) and in_place.intact()


@PRIMITIVES
@given(seed=seeds, size=st.integers(1, 400), s_in=scales, ratio=st.floats(2.0**-4, 2.0**4), zp_in=zero_points,
       zp_out=zero_points)
def test_mean_row(seed, size, s_in, ratio, zp_in, zp_out):
    axis = Tensor(0, "", (1,), np.dtype(np.int32), None, np.array([-1], np.int32))
    graph, op = one_op_graph("MEAN", [int8_tensor((1, size), s_in, zp_in), axis],
                             int8_tensor((1, 1), s_in * ratio, zp_out), {"keep_dims": True})
    params = prepare(graph, op)
    x = Guarded(random_int8(np.random.default_rng(seed), size))
    got = row_ops.mean_row(params, x.array, sanitize=SANITIZE)
    assert got == reduce.mean(params, x.array[None]).item() and x.intact()


@PRIMITIVES
@given(s_in=scales, s_out=st.floats(2.0**-6, 2.0**2), zp_in=zero_points, zp_out=zero_points)
def test_rsqrt_of_every_int8(s_in, s_out, zp_in, zp_out):
    graph, op = one_op_graph("RSQRT", [int8_tensor((256,), s_in, zp_in)], int8_tensor((256,), s_out, zp_out))
    params = prepare(graph, op)
    valid = np.arange(zp_in, 128, dtype=np.int64).astype(np.int8)
    expected = elementwise.rsqrt(params, valid)
    assert [row_ops.rsqrt(params, int(v), sanitize=SANITIZE) for v in valid] == expected.tolist()
    if zp_in > -128:
        with pytest.raises(McuformerError, match="below the input zero point"):
            row_ops.rsqrt(params, zp_in - 1, sanitize=SANITIZE)


@PRIMITIVES
@given(s_in=st.floats(2.0**-12, 2.0**3), zp_in=zero_points)
def test_logistic_of_every_int8(s_in, zp_in):
    graph, op = one_op_graph("LOGISTIC", [int8_tensor((256,), s_in, zp_in)], int8_tensor((256,), 1 / 256, -128))
    params = prepare(graph, op)
    every = np.arange(-128, 128).astype(np.int8)
    expected = logistic.logistic(params, every)
    assert [row_ops.logistic(params, int(v), sanitize=SANITIZE) for v in every] == expected.tolist()


@PRIMITIVES
@given(seed=seeds, size=st.integers(1, 300), s_in=st.floats(2.0**-8, 2.0**0), beta=st.floats(0.25, 2.0),
       zp_in=zero_points, spread=st.integers(1, 255))
def test_softmax_row(seed, size, s_in, beta, zp_in, spread):
    graph, op = one_op_graph("SOFTMAX", [int8_tensor((1, size), s_in, zp_in)],
                             int8_tensor((1, size), 1 / 256, -128), {"beta": beta})
    params = prepare(graph, op)
    values = (np.random.default_rng(seed).integers(0, spread, size, endpoint=True) - 128).astype(np.int8)
    x, out = Guarded(values), Guarded(np.zeros(size, np.int8))
    row_ops.softmax_row(params, x.array, out=out.array, sanitize=SANITIZE)
    assert np.array_equal(out.array, softmax.softmax(params, values[None]).reshape(-1))
    assert np.array_equal(x.array, values) and x.intact() and out.intact()
    in_place = Guarded(values)
    row_ops.softmax_row(params, in_place.array, out=in_place.array, sanitize=SANITIZE)
    assert np.array_equal(in_place.array, out.array) and in_place.intact()


@PRIMITIVES
@given(seed=seeds, depth=st.integers(1, 80), columns=st.integers(1, 80), adj_y=st.booleans(), s_lhs=scales,
       s_rhs=scales, gain=st.floats(2.0**-12, 2.0**2), zp_lhs=zero_points, zp_rhs=zero_points,
       zp_out=zero_points)
def test_batch_matmul_row(seed, depth, columns, adj_y, s_lhs, s_rhs, gain, zp_lhs, zp_rhs, zp_out):
    rng = np.random.default_rng(seed)
    rhs_shape = (columns, depth) if adj_y else (depth, columns)
    graph, op = one_op_graph("BATCH_MATMUL", [int8_tensor((1, depth), s_lhs, zp_lhs),
                                              int8_tensor(rhs_shape, s_rhs, zp_rhs)],
                             int8_tensor((1, columns), s_lhs * s_rhs / gain, zp_out),
                             {"adj_x": False, "adj_y": adj_y})
    params = prepare(graph, op)
    lhs, rhs = Guarded(random_int8(rng, depth)), Guarded(random_int8(rng, rhs_shape))
    out = Guarded(np.zeros(columns, np.int8))
    row_ops.batch_matmul_row(params, lhs.array, rhs.array, out=out.array, sanitize=SANITIZE)
    expected = fully_connected.batch_matmul(params, lhs.array[None], rhs.array).reshape(-1)
    assert np.array_equal(out.array, expected)
    assert lhs.intact() and rhs.intact() and out.intact()


def test_primitive_arguments_outside_the_c_ranges_are_refused():
    graph, op = one_op_graph("SOFTMAX", [int8_tensor((1, 600), 0.05, 0)], int8_tensor((1, 600), 1 / 256, -128),
                             {"beta": 1.0})
    with pytest.raises(McuformerError, match="sum of exponentials reaches 512"):
        row_ops.softmax_row(prepare(graph, op), np.zeros(600, np.int8), sanitize=SANITIZE)
    graph, op = one_op_graph("BATCH_MATMUL", [int8_tensor((4, 1), 0.1), int8_tensor((4, 3), 0.1)],
                             int8_tensor((1, 3), 0.1), {"adj_x": True, "adj_y": False})
    with pytest.raises(McuformerError, match="adj_x has no row kernel"):
        row_ops.batch_matmul_row(prepare(graph, op), np.zeros(4, np.int8), np.zeros((4, 3), np.int8))
    graph, op = one_op_graph("MUL", [int8_tensor((4,), 1.0), int8_tensor((4,), 1.0)], int8_tensor((4,), 2.0**-40))
    with pytest.raises(McuformerError, match=r"MUL shift=41 is outside \[-31, 30\]"):
        row_ops.mul_row(prepare(graph, op), np.zeros(4, np.int8), np.zeros(4, np.int8))
    graph, op = one_op_graph("ADD", [int8_tensor((4,), 0.1), int8_tensor((4,), 0.1)], int8_tensor((4,), 0.1))
    with pytest.raises(McuformerError, match="operands of 4 and 3 elements"):
        row_ops.add_row(prepare(graph, op), np.zeros(4, np.int8), np.zeros(3, np.int8))
    with pytest.raises(McuformerError, match="C-contiguous int8 array is required, got int32"):
        row_ops.add_row(prepare(graph, op), np.zeros(4, np.int32), np.zeros(4, np.int8))


# --- the fused kernels: cases from exported models ------------------------------------------------

@dataclass
class BlockCase:
    model: str  # path of the .tflite
    ops: list  # operator indices of the subgraph
    inputs: np.ndarray  # the subgraph's input tensor: tokens, or the image of a patch embedding
    expected: np.ndarray  # its output tensor, as run_graph computes it


def _layer_norm_start(ops, j: int) -> int:
    return max(i for i in range(j) if ops[i].opcode == "MEAN" and ops[i + 1].opcode == "SUB")


def _up_to_add(ops, start: int, j: int) -> list:
    return ops[start:next(i for i in range(j, len(ops)) if ops[i].opcode == "ADD") + 1]


def mlp_subgraphs(graph) -> list[list]:
    """Each block's MLP subgraph: from its LayerNorm's MEAN, SUB to the first ADD after its LOGISTIC."""
    ops = graph.operators
    return [_up_to_add(ops, _layer_norm_start(ops, j), j) for j, op in enumerate(ops) if op.opcode == "LOGISTIC"]


def attention_subgraphs(graph) -> list[list]:
    """Each block's attention subgraph: from its LayerNorm's MEAN, SUB to the first ADD after its SOFTMAX."""
    ops = graph.operators
    return [_up_to_add(ops, _layer_norm_start(ops, j), j) for j, op in enumerate(ops) if op.opcode == "SOFTMAX"]


def patch_embed_subgraphs(graph) -> list[list]:
    """The patch embedding: from the CONV_2D to the first ADD after it."""
    ops = graph.operators
    return [_up_to_add(ops, j, j) for j, op in enumerate(ops) if op.opcode == "CONV_2D"]


SUBGRAPHS = {"mlp": mlp_subgraphs, "attention": attention_subgraphs, "patch_embed": patch_embed_subgraphs}
KIND_SEEDS = {"mlp": MLP_SEEDS, "attention": BLOCK_SEEDS, "patch_embed": BLOCK_SEEDS}


def run_ops(graph, ops, values: dict) -> dict:
    """The numpy TFLM model of `ops` alone, on `values` (tensor index -> array)."""
    values = {**{t.index: t.data for t in graph.tensors if t.is_constant}, **values}
    for op in ops:
        kernel = KERNELS[op.opcode]
        arguments = [values[i] if i >= 0 else None for i in (op.inputs + (-1,) * kernel.arity)[:kernel.arity]]
        results = kernel.evaluate(kernel.prepare(graph, op), *arguments)
        for index, result in zip(op.outputs, results if isinstance(results, list) else [results]):
            values[index] = result
    return values


def _affine_model(space, folder: Path) -> Path:
    """A digits subnet (low-rank, 2 heads per block) whose LayerNorms have random gamma and beta (block 0
    both, block 1 gamma only, block 2 beta only), so its graph keeps MUL(gamma) and ADD(beta) where they
    are not identities (a fresh supernet's ones and zeros are folded away by the converter), and whose
    patch embedding, qkv and proj have random biases (a fresh supernet's zero biases are dropped)."""
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.supernet import Supernet
    from mcuformer_tf.quantize.convert import to_int8_tflite

    config = space.sample(random.Random(AFFINE_SEED))
    supernet = Supernet(space)
    supernet(np.zeros((1, 32, 32, 3), np.float32))
    model = extract_subnet(supernet, config)
    rng = np.random.default_rng(AFFINE_SEED)
    for layer in range(config.depth):
        for norm in (model.get_layer(f"block{layer}_ln2"), model.get_layer(f"block{layer}_ln1")):
            if layer % 3 != 2:
                norm.gamma.assign(rng.uniform(0.5, 1.5, norm.gamma.shape))
            if layer % 3 != 1:
                norm.beta.assign(rng.uniform(-0.3, 0.3, norm.beta.shape))
    names = {layer.name for layer in model.layers}
    biased = ["patch_embed"] + [name for layer in range(config.depth) for linear in ("qkv", "proj")
                                for name in (f"block{layer}_{linear}", f"block{layer}_{linear}_b") if name in names]
    for name in biased:
        bias = model.get_layer(name).bias
        bias.assign(rng.uniform(-0.2, 0.2, bias.shape))
    images = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    path = folder / "affine.tflite"
    path.write_bytes(to_int8_tflite(model, images))
    return path


def _make_cases(request, folder: Path) -> dict[str, list[BlockCase]]:
    fresh_int8_tflite = request.getfixturevalue("fresh_int8_tflite")
    space = SearchSpace.load("digits")
    paths = {seed: fresh_int8_tflite(space.sample(random.Random(seed)))
             for seed in sorted(set(MLP_SEEDS) | set(BLOCK_SEEDS))}
    paths["affine"] = _affine_model(space, folder)
    rng = np.random.default_rng(0)
    cases: dict = {kind: [] for kind in SUBGRAPHS}
    for name, path in paths.items():
        graph = read_model(Path(path).read_bytes())
        kinds = [kind for kind in SUBGRAPHS if name == "affine" or name in KIND_SEEDS[kind]]
        subgraphs = {kind: SUBGRAPHS[kind](graph) for kind in kinds}
        image_shape = graph.tensor(graph.inputs[0]).shape
        for _ in range(IMAGES_PER_MODEL):
            values = run_graph(graph, random_int8(rng, image_shape))
            for kind in kinds:
                cases[kind] += [BlockCase(str(path), [op.index for op in ops], values[ops[0].inputs[0]],
                                          values[ops[-1].outputs[0]]) for ops in subgraphs[kind]]
        for kind in kinds:
            for ops in subgraphs[kind]:  # random inputs, straight into the subgraph
                x, y = ops[0].inputs[0], ops[-1].outputs[0]
                given = random_int8(rng, graph.tensor(x).shape)
                cases[kind].append(BlockCase(str(path), [op.index for op in ops], given,
                                             run_ops(graph, ops, {x: given})[y]))
    return cases


@pytest.fixture(scope="module")
def block_cases(request, tmp_path_factory) -> dict[str, list[BlockCase]]:
    """Per kind (mlp, attention, patch_embed), every such subgraph of the digits models of KIND_SEEDS and
    the affine model, on 3 inputs each (2 images' values, 1 random input)."""
    folder = os.environ.get(CASES_DIR_VARIABLE)
    if folder:  # the sanitized child: the parent made the cases
        return {kind: [BlockCase(str(data["model"]), data["ops"].tolist(), data["inputs"], data["expected"])
                       for data in map(np.load, sorted(Path(folder).glob(f"{kind}_*.npz")))]
                for kind in SUBGRAPHS}
    return _make_cases(request, tmp_path_factory.mktemp("block_models"))


@pytest.fixture(scope="module")
def mlp_cases(block_cases) -> list[BlockCase]:
    return block_cases["mlp"]


@pytest.fixture(scope="module")
def attention_cases(block_cases) -> list[BlockCase]:
    return block_cases["attention"]


@pytest.fixture(scope="module")
def patch_embed_cases(block_cases) -> list[BlockCase]:
    return block_cases["patch_embed"]


def _ops(graphs: dict, case: BlockCase) -> tuple:
    graph = graphs.setdefault(case.model, read_model(Path(case.model).read_bytes()))
    return graph, [graph.operators[i] for i in case.ops]


def _runs_in_place(kernel, case: BlockCase, size: int) -> bool:
    """The kernel's result overwrites its input tokens; its scratch of exactly `size` bytes is all used.

    Returns whether the overwriting is observable: whether the block changes its input at all.
    """
    finals = []
    for poison in (0x55, -0x56):
        tokens = Guarded(case.inputs)
        scratch = Guarded(np.full(size, poison, np.int8))
        kernel.run(tokens.array, scratch.array, sanitize=SANITIZE)
        # The result is in the input tokens' own bytes: the kernel has no output buffer.
        assert np.array_equal(tokens.array, case.expected), case.model
        assert tokens.intact() and scratch.intact()
        finals.append(scratch.array.copy())
    # A byte left at its poison in both runs was never written: none is, so the size is tight.
    assert not np.any((finals[0] == 0x55) & (finals[1] == -0x56))

    exact_tokens = case.inputs.copy()  # allocations of exactly the sizes: ASan sees any byte beyond
    kernel.run(exact_tokens, np.empty(size, np.int8), sanitize=SANITIZE)
    assert np.array_equal(exact_tokens, case.expected)
    return not np.array_equal(case.inputs, case.expected)


def _rank(linear) -> int:
    return linear.layers[0].output_depth if linear.num_layers == 2 else 0


def _layer_norm_kinds(ln) -> set:
    return {*(["gamma"] if ln.gamma else []), *(["beta"] if ln.beta else []),
            *([] if ln.gamma or ln.beta else ["no affine"])}


# --- MCUF_MLP -------------------------------------------------------------------------------------

def test_mlp_kernel_equals_run_graph_in_place(mlp_cases):
    graphs, seen = {}, set()
    for case in mlp_cases:
        graph, ops = _ops(graphs, case)
        kernel = mcuf_kernels.mlp_kernel(graph, ops)
        p = kernel.params
        ranks = [_rank(p.fc1), _rank(p.fc2)]
        seen |= {("low-rank" if ranks[0] else "dense"), *(op.opcode for op in ops), *_layer_norm_kinds(p.ln)}
        size = kernel.buffer_size(SANITIZE)
        assert size == 3 * TILE * max(p.hidden, p.depth, *ranks) == 3 * TILE * p.hidden
        assert _runs_in_place(kernel, case, size)
    assert seen >= {"dense", "low-rank", "RESHAPE", "gamma", "beta", "no affine"}, seen
    assert len(mlp_cases) == 16 * (IMAGES_PER_MODEL + 1)  # 16 blocks in the 5 models


def test_mlp_kernel_refuses_what_it_cannot_run(mlp_cases):
    case = mlp_cases[0]
    graph = read_model(Path(case.model).read_bytes())
    ops = [graph.operators[i] for i in case.ops]
    kernel = mcuf_kernels.mlp_kernel(graph, ops)
    with pytest.raises(McuformerError, match=rf"scratch: {kernel.buffer_size(SANITIZE)} bytes are required"):
        kernel.run(case.inputs.copy(), np.zeros(kernel.buffer_size(SANITIZE) - 1, np.int8), sanitize=SANITIZE)
    with pytest.raises(McuformerError, match="C-contiguous int8 array is required"):
        kernel.run(case.inputs.astype(np.int16), sanitize=SANITIZE)
    with pytest.raises(McuformerError, match=r"MCUF_MLP: SUB expected at position 1, found operator \d+ \(MEAN\)"):
        mcuf_kernels.mlp_kernel(graph, [ops[0], ops[0]])
    with pytest.raises(McuformerError, match="follows the residual ADD"):
        mcuf_kernels.mlp_kernel(graph, ops + [ops[0]])
    centred = ops[1].outputs[0]
    graph.operators.append(Operator(len(graph.operators), "MUL", (centred, centred), (len(graph.tensors),)))
    with pytest.raises(McuformerError, match=rf"its output {centred} is also read outside the subgraph"):
        mcuf_kernels.mlp_kernel(graph, ops)


# --- MCUF_ATTENTION -------------------------------------------------------------------------------

def test_attention_kernel_equals_run_graph_in_place(attention_cases):
    graphs, seen, observable = {}, set(), 0
    for case in attention_cases:
        graph, ops = _ops(graphs, case)
        kernel = mcuf_kernels.attention_kernel(graph, ops)
        p = kernel.params
        ranks = [_rank(p.qkv), _rank(p.proj)]
        all_heads = p.heads * p.head_dim
        transposes = sum(op.opcode == "TRANSPOSE" for op in ops)
        seen |= {f"{p.heads} heads", f"qkv {'low-rank' if ranks[0] else 'dense'}",
                 f"proj {'low-rank' if ranks[1] else 'dense'}", *_layer_norm_kinds(p.ln),
                 *(f"{name} bias" for name, linear in (("qkv", p.qkv), ("proj", p.proj))
                   if linear.layers[linear.num_layers - 1].bias),
                 "heads merged" if transposes == 2 else "context straight to proj"}
        assert (p.tokens, p.depth, p.head_dim) == (kernel.num_tokens, kernel.depth, 64)
        size = kernel.buffer_size(SANITIZE)
        rows = max(p.depth, *ranks)
        assert size == 2 * TILE * max(rows, all_heads, p.tokens) + 2 * p.tokens * all_heads + \
            TILE * (rows + all_heads + p.tokens)
        observable += _runs_in_place(kernel, case, size)
    assert seen >= {"1 heads", "2 heads", "qkv dense", "qkv low-rank", "proj dense", "proj low-rank",
                    "gamma", "beta", "no affine", "qkv bias", "proj bias", "heads merged",
                    "context straight to proj"}, seen
    assert len(attention_cases) == 19 * (IMAGES_PER_MODEL + 1)  # 19 blocks in the 6 models
    # A block can leave its input as it is (proj's output below half a step of the residual's
    # scale on every token: seen on random tokens of a fresh model); nearly all change it.
    assert observable >= 0.95 * len(attention_cases)


def test_attention_kernel_refuses_what_it_cannot_run(attention_cases, mlp_cases):
    case = attention_cases[0]
    graph = read_model(Path(case.model).read_bytes())
    ops = [graph.operators[i] for i in case.ops]
    kernel = mcuf_kernels.attention_kernel(graph, ops)
    size = kernel.buffer_size(SANITIZE)
    with pytest.raises(McuformerError, match=rf"scratch: {size} bytes are required"):
        kernel.run(case.inputs.copy(), np.zeros(size - 1, np.int8), sanitize=SANITIZE)
    with pytest.raises(McuformerError, match=rf"tokens: {kernel.num_tokens}x{kernel.depth} elements"):
        kernel.run(case.inputs.reshape(-1)[:-kernel.depth].copy(), sanitize=SANITIZE)
    softmax_at = next(i for i, op in enumerate(ops) if op.opcode == "SOFTMAX")
    with pytest.raises(McuformerError, match=r"MCUF_ATTENTION: SOFTMAX expected at position \d+, found "
                                             r"operator \d+ \(BATCH_MATMUL\)"):
        mcuf_kernels.attention_kernel(graph, ops[:softmax_at] + ops[softmax_at + 1:])
    mlp_graph = read_model(Path(mlp_cases[0].model).read_bytes())
    with pytest.raises(McuformerError, match=r"MCUF_ATTENTION: RESHAPE expected at position \d+, found "
                                             r"operator \d+ \(MUL\)"):
        mcuf_kernels.attention_kernel(mlp_graph, [mlp_graph.operators[i] for i in mlp_cases[0].ops])
    keys = next(op for op in ops if op.opcode == "UNPACK").outputs[1]
    graph.operators.append(Operator(len(graph.operators), "MUL", (keys, keys), (len(graph.tensors),)))
    with pytest.raises(McuformerError, match=rf"its output {keys} is also read outside the subgraph"):
        mcuf_kernels.attention_kernel(graph, ops)


# --- MCUF_PATCH_EMBED -----------------------------------------------------------------------------

def _placement_bound(p) -> int:
    """mcuf/patch_embed.h's L: the largest byte offset of the tokens from the image's start."""
    in_row, out_row = p.patch * p.image_width * p.channels, p.image_width // p.patch * p.depth
    return (1 if in_row >= out_row else p.image_height // p.patch - 1) * (in_row - out_row)


def _run_aliased(kernel, image: np.ndarray, offset: int, span: int, scratch: np.ndarray) -> tuple:
    """Runs the kernel with the tokens at image + offset in one guarded buffer of `span` bytes that starts
    at image + min(0, offset); returns (tokens, the Guarded buffer)."""
    start = -min(0, offset)
    shared = Guarded(np.full(span, 0x55, np.int8))
    shared.array[start:start + image.size] = image.reshape(-1)
    tokens = shared.array[start + offset:start + offset + kernel.num_tokens * kernel.depth]
    kernel.run(shared.array[start:start + image.size], tokens, scratch, sanitize=SANITIZE)
    return tokens, shared


def test_patch_embed_kernel_equals_run_graph_in_separate_and_shared_memory(patch_embed_cases):
    graphs, seen = {}, set()
    for case in patch_embed_cases:
        graph, ops = _ops(graphs, case)
        kernel = mcuf_kernels.patch_embed_kernel(graph, ops)
        p = kernel.params
        expected = case.expected.reshape(-1)
        image_bytes, token_bytes = case.inputs.size, case.expected.size
        assert (kernel.image_bytes, kernel.num_tokens * kernel.depth) == (image_bytes, token_bytes)
        seen |= {f"patch {p.patch}", "conv bias" if p.bias else "no conv bias",
                 "tokens larger" if token_bytes > image_bytes else "image larger"}
        size = kernel.buffer_size(SANITIZE)
        assert size == p.image_width // p.patch * p.depth
        offset = kernel.output_offset(SANITIZE)
        assert offset == min(0, image_bytes - token_bytes)

        finals = []  # separate buffers
        for poison in (0x55, -0x56):
            image, tokens = Guarded(case.inputs), Guarded(np.full(token_bytes, poison, np.int8))
            scratch = Guarded(np.full(size, poison, np.int8))
            kernel.run(image.array, tokens.array, scratch.array, sanitize=SANITIZE)
            assert np.array_equal(tokens.array, expected), case.model
            assert np.array_equal(image.array, case.inputs)
            assert image.intact() and tokens.intact() and scratch.intact()
            finals.append(scratch.array.copy())
        assert not np.any((finals[0] == 0x55) & (finals[1] == -0x56))  # every scratch byte is used

        # Shared memory: the tokens overwrite the image, at output_offset (the union is then just the
        # larger of the two) and at the header's bound L; one byte further is refused.
        bound = _placement_bound(p)
        assert offset <= bound
        for placement in (offset, bound):
            span = max(image_bytes, placement + token_bytes) - min(0, placement)
            scratch = Guarded(np.full(size, 0x55, np.int8))
            tokens, shared = _run_aliased(kernel, case.inputs, placement, span, scratch.array)
            assert np.array_equal(tokens, expected), (case.model, placement)
            assert shared.intact() and scratch.intact()
            if placement == offset:
                assert span == max(image_bytes, token_bytes)
        with pytest.raises(McuformerError, match="overwrite pixels not yet read"):
            _run_aliased(kernel, case.inputs, bound + 1, max(image_bytes, bound + 1 + token_bytes) - min(0, bound),
                         np.zeros(size, np.int8))

        joint = np.empty(max(image_bytes, token_bytes), np.int8)  # exact allocations, for ASan
        joint[-offset:-offset + image_bytes] = case.inputs.reshape(-1)
        kernel.run(joint[-offset:-offset + image_bytes], joint[:token_bytes], np.empty(size, np.int8),
                   sanitize=SANITIZE)
        assert np.array_equal(joint[:token_bytes], expected)
    assert seen >= {"patch 4", "patch 8", "conv bias", "tokens larger", "image larger"}, seen
    assert len(patch_embed_cases) == 6 * (IMAGES_PER_MODEL + 1)


def test_patch_embed_kernel_refuses_what_it_cannot_run(patch_embed_cases, mlp_cases):
    case = patch_embed_cases[0]
    graph = read_model(Path(case.model).read_bytes())
    ops = [graph.operators[i] for i in case.ops]
    kernel = mcuf_kernels.patch_embed_kernel(graph, ops)
    tokens = np.zeros(case.expected.size, np.int8)
    with pytest.raises(McuformerError, match=rf"scratch: {kernel.buffer_size(SANITIZE)} bytes are required"):
        kernel.run(case.inputs, tokens, np.zeros(kernel.buffer_size(SANITIZE) - 1, np.int8), sanitize=SANITIZE)
    with pytest.raises(McuformerError, match="image and tokens: .* elements are required"):
        kernel.run(case.inputs, tokens[1:], sanitize=SANITIZE)
    with pytest.raises(McuformerError, match="follows the position ADD"):
        mcuf_kernels.patch_embed_kernel(graph, ops + [graph.operators[ops[-1].index + 1]])
    mlp_graph = read_model(Path(mlp_cases[0].model).read_bytes())
    with pytest.raises(McuformerError, match=r"MCUF_PATCH_EMBED: CONV_2D expected at position 0, found "
                                             r"operator \d+ \(MEAN\)"):
        mcuf_kernels.patch_embed_kernel(mlp_graph, [mlp_graph.operators[i] for i in mlp_cases[0].ops])


# --- the sanitized rerun --------------------------------------------------------------------------

@pytest.mark.skipif(SANITIZE, reason="this is the sanitized child run")
def test_this_module_again_under_sanitizers(block_cases, tmp_path):
    for kind, cases in block_cases.items():
        for number, case in enumerate(cases):
            np.savez(tmp_path / f"{kind}_{number:03d}.npz", model=case.model, ops=np.array(case.ops),
                     inputs=case.inputs, expected=case.expected)
    env = {**os.environ, **host_runner.sanitizer_env(), "MCUF_TEST_SANITIZE": "1",
           CASES_DIR_VARIABLE: str(tmp_path), "PYTHONPATH": str(host_runner.SOURCES_DIR.parent)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            capture_output=True, text=True, env=env, cwd=host_runner.SOURCES_DIR.parent)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed" not in summary and " passed" in summary and "1 skipped" in summary, summary


@pytest.mark.skipif(not SANITIZE, reason="runs in the sanitized child only")
def test_the_child_calls_the_sanitized_library():
    assert kernel_params.load(sanitize=True)._name == str(host_runner.build_mcuf_library(sanitize=True))
