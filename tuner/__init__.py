"""KerasTuner plug-in for mcuformer-tf: search spaces as HyperParameters (more in DESIGN.md §1)."""
import mcuformer_tf  # noqa: F401  (selects tf_keras before anything imports TensorFlow)
