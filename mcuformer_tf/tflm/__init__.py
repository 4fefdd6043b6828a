"""The ground truth every stage checks against: stock TFLite-Micro, and how it reads and plans a model.

`tflite_graph` reads a .tflite into plain Python objects; `runtime` runs a model in the stock TFLM
wheel (and LiteRT); `host_runner` builds and runs the user's own TFLM with the MCUF ops on the host
(TFLM_ROOT); `arena_plan` is TFLM's non-persistent arena planner, placement for placement; `arith`
is TFLM's int8 kernels' integer arithmetic in numpy. Imports nothing else of mcuformer_tf but errors.
"""
