"""Stage 2, quantisation (the README's "Export"): a float subnet in, an int8 .tflite out.

`qat` gives every layer a tfmot QuantizeConfig and fine-tunes the subnet quantisation-aware,
`convert` turns it into an int8 TFLite flatbuffer of TFLM builtins with batch 1, and `export` runs
the whole export and measures float, QAT and int8-in-TFLM accuracy. Uses `nas` and `tflm`.
"""
