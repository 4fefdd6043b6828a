"""The export form a memory figure is for: which int8 graph the converter writes for a subnet.

The memory model rebuilds an exported graph from its `SubnetConfig` alone, and the graph depends on
how it was exported as well as on the config. Two things decide it (`ExportForm`):

- `qat`: the QAT export (`mcuformer-tf export`: FULLY_CONNECTED kernels per tensor, as tfmot
  quantises them, the patch embedding per channel; every LayerNorm's gamma and beta kept, since
  the fake quantisation between them stops the converter folding them) or the converter's form
  of a float model (every kernel per output channel; where the linear after a LayerNorm, qkv or
  fc1, stays dense the converter folds gamma and beta into it).
- `trained`: trained weights, or fresh ones (the converter drops gamma/beta and FC biases that
  are exactly 1 and 0: two [N, D] activations fewer per LayerNorm; the CONV_2D bias stays).

A third, `weight_bits`, is the width the linear and patch-embedding weights are stored in: 8
(int8) or 4 (`export --weight-bits 4`: TFLM's packed INT4 tensors, two weights a byte, which only
the QAT form writes). It halves those constants in both files; stock TFLM unpacks each INT4 filter
of a builtin FULLY_CONNECTED or CONV_2D into an arena scratch buffer of one byte per weight before
it runs (`tflm.arena_plan`), while the MCUF kernels read INT4 weights in place. `memory_of` takes
it from the `SubnetConfig`.

`QAT` is the default everywhere (what `export` writes), `FLOAT` the converter's form of a trained
float model, `FRESH_FLOAT` that of fresh weights. The fits of `persistent` and `flash` were made
on the float forms and hold for `QAT` through the counts (tests: QAT exports).
"""
from __future__ import annotations

from typing import NamedTuple

from mcuformer_tf.tflm.int4 import packed_size


class ExportForm(NamedTuple):
    """How the subnet was exported (module docstring)."""

    qat: bool
    trained: bool
    weight_bits: int = 8

    @property
    def int4(self) -> bool:
        """The linear and patch-embedding weights are packed INT4 tensors."""
        return self.weight_bits == 4

    def weight_bytes(self, count: int) -> int:
        """Bytes of one weight tensor of `count` values: one a value, or two values a byte."""
        return packed_size(count) if self.int4 else count

    def unpacking(self, count: int) -> tuple:
        """The scratch stock TFLM requests to unpack a builtin's filter of `count` values."""
        return (count,) if self.int4 else ()

    def affine(self, dense: bool) -> bool:
        """Whether a LayerNorm keeps its gamma MUL and beta ADD: trained weights, and either a QAT
        export (the fake quantisation between them stops the converter folding them) or a
        low-rank linear after it (a dense FULLY_CONNECTED takes them in)."""
        return self.trained and (self.qat or not dense)


QAT = ExportForm(qat=True, trained=True)
FLOAT = ExportForm(qat=False, trained=True)
FRESH_FLOAT = ExportForm(qat=False, trained=False)
