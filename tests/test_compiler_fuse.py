"""Fusion: every ViT block becomes one MCUF operator whose options alone rebuild the builtins.

unfuse(fuse(model)) is the original graph operator for operator (opcodes, versions, builtin
options, wiring, shapes, quantisation, constants; only the intermediate tensors' names differ)
and runs in stock TFLM to the same bytes; the fused graph's plan honours the kernels' in-place
memory and their scratch, and is smaller than TFLM's plan of the unfused graph.
"""
import numpy as np
import pytest
from flatbuffers import flexbuffers
from supernets import digits_models

from mcuformer_tf.compiler import ir, subgraphs
from mcuformer_tf.compiler.match import TENSOR_ROLES, match
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.compiler.unfuse import KINDS, MCUF_SCRATCH, kernel, unfuse
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory import report as memory_report
from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model

# fresh (LayerNorm affine and zero biases folded away): patch 8 low-rank 2 heads; patch 4
# low-rank 1-2 heads; patch 4 dense+low-rank 1-2 heads; patch 8 dense attention with 1 head and
# low-rank MLP. Perturbed (all kept): patch 8 low-rank 2 heads; patch 4, 64 channels (the tokens
# outgrow the image), low-rank, 1-2 heads.
FRESH_SEEDS = (0, 1, 3, 7)
PERTURBED_SEEDS = (0, 4)


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite, perturbed_int8_tflite):
    """(label, config, .tflite bytes) of every model under test."""
    return digits_models(digits_space, fresh_int8_tflite, perturbed_int8_tflite, FRESH_SEEDS,
                         PERTURBED_SEEDS)


@pytest.fixture(scope="module")
def compiled(models):
    return [compile_model(raw) for _, _, raw in models]


def _structure(model):
    """Every operator as (opcode, version, options, inputs, outputs), each tensor by the order it
    first appears in, with its shape, type, quantisation and constant bytes (not its name)."""
    numbers = {}

    def key(t):
        if t is None:
            return None
        numbers.setdefault(t, len(numbers))
        q = t.quantization
        return (numbers[t], tuple(t.shape), t.dtype.str,
                None if q is None else (q.scale.tolist(), q.zero_point.tolist(), q.axis),
                None if t.buffer is None else t.buffer.data)

    return [(op.opcode, op.version, op.options_type,
             None if op.options is None else sorted(vars(op.options).items(), key=str),
             [key(t) for t in op.inputs], [key(t) for t in op.outputs]) for op in model.operators]


def test_every_block_but_the_head_becomes_one_mcuf_operator(models, compiled):
    for (label, config, raw), result in zip(models, compiled):
        kinds = ["patch_embed"] + ["attention", "mlp"] * config.depth
        assert [(b.kind, code) for b, code in result.fusion.fused] == \
            [(kind, subgraphs.FUSED[kind].code) for kind in kinds], label
        assert [(b.kind, reason) for b, reason in result.fusion.kept] == \
            [("head", "no MCUF kernel for head blocks")]
        graph = read_model(result.model_bytes)
        head = result.blocks[-1].ops
        assert [op.opcode for op in graph.operators] == \
            [subgraphs.FUSED[kind].code for kind in kinds] + [op.opcode for op in head]
        for op, (block, _) in zip(graph.operators, result.fusion.fused):
            spec = subgraphs.FUSED[block.kind]
            assert len(op.inputs) == len(spec.inputs) and len(op.outputs) == 1
            assert all(graph.tensors[i].is_constant for i in op.inputs[1:] if i >= 0)
            absent = [role for role, i in zip(spec.input_roles, op.inputs) if i < 0]
            assert absent == [role for role in spec.input_roles if block.tensors[role] is None]


def test_custom_options_hold_every_intermediate_quantisation_and_the_dims(models, compiled):
    for (label, _, raw), result in zip(models, compiled):
        model = ir.read(raw)
        blocks = [b for b in match(model) if b.kind in subgraphs.FUSED]
        fused_ops = [op for op in read_model(result.model_bytes).operators if op.is_custom]
        for block, op in zip(blocks, fused_ops):
            options = flexbuffers.Loads(op.custom_options)
            assert set(options) == {"dims", "has", "scale", "zero_point", "shape", "reads"}
            assert options["dims"] == {k: v or 0 for k, v in block.dims.items()}
            assert options["reads"] == {}, label  # the converter's wiring throughout
            written = [t for o in block.ops for t in o.outputs if t is not block.output]
            assert len(options["scale"]) == len(written) == len(options["shape"])
            roles = {t: role for role, t in reversed(block.tensors.items()) if t is not None}
            for t in written:
                role = roles[t]
                assert options["scale"][role] == float(t.quantization.scale[0])
                assert options["zero_point"][role] == int(t.quantization.zero_point[0])
                assert options["shape"][role] == list(t.shape)
            steps = subgraphs.optional_roles(block.kind)
            for role, present in options["has"].items():  # a step's role names its operator
                expected = role in block.op_roles if role in steps else \
                    block.tensors[role] is not None
                assert present == expected, (label, role)
    flags = [flexbuffers.Loads(op.custom_options)["has"] for result in compiled
             for op in read_model(result.model_bytes).operators if op.opcode == "MCUF_MLP"]
    for role in ("ln_gamma", "ln_beta", "fc1_bias", "fc1_down_weight", "gelu_sigmoid_tokens"):
        assert {f[role] for f in flags} == {True, False}, role  # both ways among the models


def test_unfuse_rebuilds_the_original_graph_and_tflm_runs_it_to_the_same_bytes(models, compiled):
    for (label, _, raw), result in zip(models, compiled):
        model = ir.read(result.model_bytes)
        unfuse(model)
        rebuilt = ir.write(model)
        assert _structure(ir.read(rebuilt)) == _structure(ir.read(raw)), label
        graph = read_model(raw)
        for seed in (1, 2):
            inputs = model_inputs(graph, seed)
            for expected, actual in zip(run_tflm(raw, inputs), run_tflm(rebuilt, inputs)):
                assert np.array_equal(expected, actual), label


def test_every_constant_is_an_input_or_implied_by_the_kind():
    for kind, spec in subgraphs.FUSED.items():
        assert spec.code in KINDS and spec.code in MCUF_SCRATCH
        steps = subgraphs.STEPS[kind]
        written = {role for step in steps for role in step.outputs}
        read = {role for step in steps for spec_input in step.inputs if spec_input is not None
                for role in ((spec_input,) if isinstance(spec_input, str) else spec_input)}
        constants = read - written - {"input"}
        assert constants == {r for r in constants if subgraphs.is_structure(r)} | \
            set(spec.input_roles[1:])
        assert written | read <= set(TENSOR_ROLES[kind])
        assert [step.role for step in steps] == list(subgraphs.steps(kind))


def test_the_plan_honours_in_place_kernels_and_their_scratch(models, compiled):
    for (label, _, raw), result in zip(models, compiled):
        graph = read_model(result.model_bytes)
        offsets = result.plan.offsets
        for op in graph.operators:
            if not op.is_custom:
                continue
            source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
            shift = subgraphs.FUSED[KINDS[op.opcode]].output_offset
            expected = 0 if shift is None else shift(source, target)
            assert offsets[op.outputs[0]] - offsets[op.inputs[0]] == expected, label
            (scratch,) = [b for b in result.plan.buffers if b.operator == op.index]
            assert scratch.size == -(-kernel(graph, op).buffer_size() // 16) * 16
        report = memory_report.memory_report(result.model_bytes)
        assert report.peak == result.plan.size and not report.unmodelled
        # under 0.55 of TFLM's plan even on 32-px digits blocks, where the kernels' tiles of 4
        # tokens make the scratch large beside the tokens (0.51 at worst here, 0.40 before them)
        assert result.plan.size < memory_report.memory_report(raw).peak * 0.55, label


def test_patch_embedding_tokens_end_where_a_smaller_image_ends(models, compiled):
    """64 tokens of 48 or 64 channels outgrow a 32x32x3 image: they start before it, rounded
    down to 16 bytes; 16 tokens fit in it and start where it starts."""
    seen = set()
    for (_, config, _), result in zip(models, compiled):
        graph = read_model(result.model_bytes)
        op = graph.operators[0]
        image, tokens = op.inputs[0], op.outputs[0]
        larger_by = graph.tensors[tokens].nbytes - graph.tensors[image].nbytes
        shift = result.plan.offsets[tokens] - result.plan.offsets[image]
        assert shift == (-(-larger_by // 16) * -16 if larger_by > 0 else 0)
        seen.add(shift < 0)
    assert seen == {True, False}


def _with_options(model_bytes: bytes, code: str, change) -> ir.Model:
    """The IR of a fused model whose first `code` operator has options changed by `change`."""
    model = ir.read(model_bytes)
    op = next(op for op in model.operators if op.opcode == code)
    options = flexbuffers.Loads(op.custom_options)
    change(options)
    op.custom_options = bytes(flexbuffers.Dumps(options))
    return model


def test_malformed_custom_options_are_refused_in_one_line(compiled):
    fused = compiled[-1].model_bytes  # perturbed: every optional role present
    model = ir.read(fused)
    next(op for op in model.operators if op.opcode == "MCUF_MLP").custom_options = b"\x01\x02"
    with pytest.raises(McuformerError, match=r"operator 2 \(MCUF_MLP\): its custom options are "
                                             "not an MCUF map"):
        unfuse(model)
    cases = [(lambda o: o["scale"].pop("ln_mean"), "give scale, zero point and shape for "
              "different tensors"),
             (lambda o: o["has"].update(ln_gamma=False), "say the block lacks 'ln_gamma'"),
             (lambda o: o["has"].pop("fc1_bias"), "flag"),
             (lambda o: o["reads"].update(gelu_out=["fc1_out", "probs"]), "operator 'gelu_out' "
              "reads 'probs', which the block lacks")]
    for change, message in cases:
        with pytest.raises(McuformerError, match=message):
            unfuse(_with_options(fused, "MCUF_MLP", change))
    for remove in ("ln_mean", "ln_centered"):  # a required step's tensor
        def drop(options, role=remove):
            for field in ("scale", "zero_point", "shape"):
                options[field].pop(role)
        with pytest.raises(McuformerError, match=f"lack the tensor '{remove}'"):
            unfuse(_with_options(fused, "MCUF_ATTENTION", drop))


def test_recorded_wiring_rebuilds_another_operand_order(compiled):
    fused = compiled[0].model_bytes

    def swap(options):
        options["reads"]["output"] = ["fc2_out", "input"]
    model = _with_options(fused, "MCUF_MLP", swap)
    mlp = next(op for op in model.operators if op.opcode == "MCUF_MLP")
    x, y = mlp.inputs[0], mlp.outputs[0]
    unfuse(model)
    (residual,) = [op for op in model.operators if op.outputs[0] is y]
    assert residual.inputs[0].name.endswith("/fc2_out") and residual.inputs[1] is x
    unchanged = ir.read(fused)
    unfuse(unchanged)
    inputs = model_inputs(read_model(fused), 4)
    assert np.array_equal(run_tflm(ir.write(unchanged), inputs)[0],
                          run_tflm(ir.write(model), inputs)[0])


def test_a_block_its_kernel_refuses_stays_builtin(models, monkeypatch):
    from mcuformer_tf.compiler import kernels as mcuf_kernels

    def refuse(graph, ops):
        raise McuformerError("MCUF_MLP: refused for the test")
    monkeypatch.setattr(mcuf_kernels, "mlp_kernel", refuse)
    label, config, raw = models[0]
    result = compile_model(raw)
    assert [b.kind for b, _ in result.fusion.fused] == ["patch_embed"] + ["attention"] * \
        config.depth
    assert [(b.kind, reason) for b, reason in result.fusion.kept[:-1]] == \
        [("mlp", "MCUF_MLP: refused for the test")] * config.depth
    opcodes = [op.opcode for op in read_model(result.model_bytes).operators]
    assert "MCUF_MLP" not in opcodes and "LOGISTIC" in opcodes
    assert result.plan.size == memory_report.memory_report(result.model_bytes).peak
