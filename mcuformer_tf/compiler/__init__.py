"""Stage 3, the graph compiler (the README's "Compile"): an unfused int8 .tflite in, a fused one out.

One module per pass over one IR (`ir.Model`), as in Vela: `ir` reads and writes .tflite bytes,
`match` finds the ViT blocks and proves their structure, `subgraphs` and `fuse` replace them with
MCUF_* custom ops, `plan` writes TFLM's OfflineMemoryAllocation metadata (token overwriting), and
`pipeline` runs them in order (`compile_model`). `kernels` and `c_library` bind the C kernels the
fused ops run (tflm_custom_ops) through ctypes; `unfuse` gives back the subgraph an MCUF op stands
for; `arena_executor` runs a fused model in one byte buffer laid out by its plan. Uses `tflm`.
"""
