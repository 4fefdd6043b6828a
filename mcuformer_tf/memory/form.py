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

`QAT` is the default everywhere (what `export` writes), `FLOAT` the converter's form of a trained
float model, `FRESH_FLOAT` that of fresh weights. The fits of `persistent` and `flash` were made
on the float forms and hold for `QAT` through the counts (tests: QAT exports).
"""
from __future__ import annotations

from typing import NamedTuple


class ExportForm(NamedTuple):
    """How the subnet was exported (module docstring)."""

    qat: bool
    trained: bool

    def affine(self, dense: bool) -> bool:
        """Whether a LayerNorm keeps its gamma MUL and beta ADD: trained weights, and either a QAT
        export (the fake quantisation between them stops the converter folding them) or a
        low-rank linear after it (a dense FULLY_CONNECTED takes them in)."""
        return self.trained and (self.qat or not dense)


QAT = ExportForm(qat=True, trained=True)
FLOAT = ExportForm(qat=False, trained=True)
FRESH_FLOAT = ExportForm(qat=False, trained=False)
