"""Export of a subnet: extract from the supernet, quantisation-aware fine-tune, int8 .tflite.

The result is the "unfused" model of DESIGN.md §1: int8 in and out, batch 1,
TFLM builtins only, which the stock TFLM wheel runs with no custom op. Its
int8 accuracy is measured by running it in TFLM, image by image.
`calibrated_int8_tflite` is the same form with no fine-tune epoch and no
measurement, for models whose subject is shape and speed (fresh weights).
With the recipe's `weight_bits` 4, the linear and patch-embedding kernels are
4-bit and the model holds them as packed INT4 tensors (`finish`, given by the
caller from a higher layer, is the compiler's packer, which proves every such
filter is INT4 whatever the converter wrote).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from mcuformer_tf.nas.data import ImageData
from mcuformer_tf.nas.evaluation import EVAL_BATCH, accuracy, traced_predict
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.run_dir import write_bytes_atomic
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.nas.supernet import Supernet
from mcuformer_tf.quantize.convert import to_int8_tflite
from mcuformer_tf.quantize.int8_accuracy import tflm_accuracy
from mcuformer_tf.quantize.qat_recipe import QatRecipe, calibration_images, quantization_aware_subnet


@dataclasses.dataclass
class ExportResult:
    path: Path
    size: int  # bytes of the .tflite
    float_accuracy: float  # the extracted float subnet
    qat_accuracy: float  # the fake-quantised model after fine-tuning, in TensorFlow
    int8_accuracy: float  # the .tflite in the stock TFLM wheel
    fine_tune: str  # which fine-tuned state was kept, and why
    weight_bits: int = 8

    def summary(self) -> str:
        weights = "" if self.weight_bits == 8 else f" (INT{self.weight_bits} weights)"
        return (f"val accuracy: float {self.float_accuracy:.2%}, QAT {self.qat_accuracy:.2%}, "
                f"int8{weights} in TFLM {self.int8_accuracy:.2%} "
                f"({(self.int8_accuracy - self.float_accuracy) * 100:+.2f} points); "
                f"{self.path} ({self.size:,} bytes)")


def export_subnet(supernet: Supernet, config: SubnetConfig, data: ImageData, out: Path,
                  recipe: QatRecipe, seed: int = 0, progress: bool = True,
                  finish: Callable[[bytes], bytes] | None = None) -> ExportResult:
    """Write `config`'s int8 .tflite to `out`, fine-tuned by `recipe`, and measure it against the
    float subnet; `finish` rewrites the converted model first (None: as converted)."""
    val = data.val_batches(EVAL_BATCH, config.image_size)
    model = extract_subnet(supernet, config)
    float_accuracy = accuracy(traced_predict(model), val)
    quantized = quantization_aware_subnet(model, data, recipe, seed=seed, progress=progress)
    qat_accuracy = accuracy(traced_predict(quantized.model), val)
    model_bytes = to_int8_tflite(quantized.model, quantized.calibration)
    if finish is not None:
        model_bytes = finish(model_bytes)
    write_bytes_atomic(Path(out), model_bytes)
    return ExportResult(Path(out), len(model_bytes), float_accuracy, qat_accuracy,
                        tflm_accuracy(model_bytes, val), quantized.describe(), recipe.weight_bits)


def calibrated_int8_tflite(model, data: ImageData, count: int = 256, seed: int = 0, weight_bits: int = 8,
                           calibration_batches: int = QatRecipe.calibration_batches) -> bytes:
    """The int8 .tflite `export` writes for a Keras subnet, with no fine-tune epoch: the QAT model
    (per-tensor linear kernels) with ranges calibrated on `calibration_batches` training batches,
    the converter's on `count` images of `data` at its input size."""
    recipe = QatRecipe(epochs=0, weight_bits=weight_bits, calibration_batches=calibration_batches)
    quantized = quantization_aware_subnet(model, data, recipe, seed=seed, progress=False)
    return to_int8_tflite(quantized.model, calibration_images(data, model.input_shape[1], count=count, seed=seed))
