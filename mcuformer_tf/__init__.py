"""mcuformer-tf: memory-budgeted low-rank vision transformers for Cortex-M7, from Keras."""
import os

# tensorflow-model-optimization works only on tf_keras (Keras 2) models; TF must
# learn this before it is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
