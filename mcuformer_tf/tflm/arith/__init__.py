"""The integer arithmetic of stock TFLM's int8 builtin kernels, in numpy, bit for bit.

One module per family of builtins (conv, fully_connected, softmax, logistic,
elementwise, reduce, shape_ops, quantize) on the shared arithmetic of
`quantization` and `fixedpoint`; `executor.run_graph` runs a whole .tflite
graph with them. It is the reference the C kernels are held to (DESIGN.md §7).
"""
from mcuformer_tf.tflm.arith.executor import prepare, run_graph
from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier, quantize_multiplier

__all__ = ["multiply_by_quantized_multiplier", "prepare", "quantize_multiplier", "run_graph"]
