"""The TFLM wheel and the TFLite reference run our int8 ViTs; what they cannot run is one line."""
import dataclasses
import os
import random

import numpy as np
import pytest

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.runtime import (
    TFLM_BUILTINS,
    check_int8,
    check_stock_model,
    model_inputs,
    native_stderr,
    run_litert,
    run_tflm,
)
from mcuformer_tf.tflm.tflite_graph import read_model


@pytest.fixture(scope="module")
def vit(digits_space):
    """A random digits subnet of an untrained supernet as an int8 .tflite: (bytes, Graph)."""
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.supernet import Supernet
    from mcuformer_tf.quantize.convert import to_int8_tflite

    supernet = Supernet(digits_space)
    supernet(np.zeros((1, 32, 32, 3), np.float32))
    model = extract_subnet(supernet, digits_space.sample(random.Random(2)))
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    raw = to_int8_tflite(model, images)
    return raw, read_model(raw)


def _tiny_tflite(activation, quantize):
    """Dense -> tf.nn.<activation> -> Dense, converted float or fully int8."""
    import tensorflow as tf
    import tf_keras as keras

    x = keras.Input((4,), batch_size=1)
    hidden = keras.layers.Lambda(getattr(tf.nn, activation))(keras.layers.Dense(8)(x))
    y = keras.layers.Dense(3)(hidden)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    if quantize:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.normal(size=(1, 4)).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def test_tflm_and_the_tflite_reference_agree_to_a_few_lsb(vit):
    raw, graph = vit
    for seed in range(3):
        inputs = model_inputs(graph, seed)
        assert inputs[0].dtype == np.int8 and inputs[0].shape == (1, 32, 32, 3)
        (tflm,) = run_tflm(raw, inputs)
        (litert,) = run_litert(raw, inputs)
        assert tflm.dtype == litert.dtype == np.int8 and tflm.shape == litert.shape == (1, 10)
        # TFLite's and TFLM's int8 softmax/logistic may differ by an LSB, compounded over blocks.
        assert np.abs(tflm.astype(int) - litert.astype(int)).max() <= 4
        np.testing.assert_array_equal(run_tflm(raw, inputs, arena_size=1 << 20)[0], tflm)
    assert len({run_tflm(raw, model_inputs(graph, s))[0].tobytes() for s in range(3)}) == 3


def test_too_small_an_arena_is_one_line_in_tflm_words(vit):
    raw, graph = vit
    with pytest.raises(McuformerError, match=r"^TFLM: TFLM failed to allocate tensors \(.+\)$"):
        run_tflm(raw, model_inputs(graph), arena_size=4096)


def test_a_float_model_is_refused_naming_the_operator():
    graph = read_model(_tiny_tflite("relu", quantize=False))
    with pytest.raises(McuformerError, match=r"operator 0 \(FULLY_CONNECTED\) has float32 input"):
        check_int8(graph)


def test_a_builtin_tflm_lacks_is_named_and_the_wheel_agrees():
    raw = _tiny_tflite("gelu", quantize=True)
    graph = read_model(raw)
    check_int8(graph)
    assert "GELU" not in TFLM_BUILTINS
    with pytest.raises(McuformerError, match="operator 1 is the builtin GELU: stock TFLM has no"):
        check_stock_model(graph)
    with pytest.raises(McuformerError, match="Didn't find op for builtin opcode 'GELU'"):
        run_tflm(raw, model_inputs(graph))


def test_custom_ops_are_named_and_mcuf_ops_point_to_the_host_runner(vit):
    _, graph = vit
    check_stock_model(graph)
    for name, fragment in (("MyOp", "custom op 'MyOp': stock TFLM has no kernel"),
                           ("MCUF_MLP", "custom op MCUF_MLP: stock TFLM has no kernel for it; "
                                        "fused models run in the host runner")):
        changed = dataclasses.replace(graph, operators=list(graph.operators))
        changed.operators[3] = dataclasses.replace(graph.operators[3], opcode=name)
        with pytest.raises(McuformerError, match=f"operator 3 is the {fragment}"):
            check_stock_model(changed)
    check_stock_model(changed, allow_mcuf=True)


def test_inputs_from_npy_and_raw_files(vit, tmp_path):
    _, graph = vit
    x = np.arange(32 * 32 * 3).astype(np.int8).reshape(1, 32, 32, 3)
    np.save(tmp_path / "x.npy", x.reshape(32, 32, 3))
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    for name in ("x.npy", "x.bin"):
        np.testing.assert_array_equal(model_inputs(graph, input_file=tmp_path / name)[0], x)
    (tmp_path / "short.bin").write_bytes(b"\0" * 100)
    with pytest.raises(McuformerError, match=r"100 bytes, the input \[1, 32, 32, 3\] int8 needs"):
        model_inputs(graph, input_file=tmp_path / "short.bin")


def test_native_stderr_captures_below_python():
    with native_stderr() as captured:
        os.write(2, b"from C\n")
    assert captured == ["from C\n"]
