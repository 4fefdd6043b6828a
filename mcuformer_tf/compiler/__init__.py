"""The TFLite graph compiler: an unfused int8 .tflite in, a planned (later: fused) .tflite out.

One module per pass over one IR (`ir.Model`), as in Vela: `ir` reads and
writes .tflite bytes, `match` finds the ViT blocks and proves their structure,
`plan` writes TFLM's OfflineMemoryAllocation metadata, and `pipeline` runs them
in order (`compile_model`).
"""
