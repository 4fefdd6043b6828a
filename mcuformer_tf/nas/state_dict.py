"""A timm state dict on disk, read as numpy: `.safetensors` (the safetensors package's numpy API)
or `.npz` (numpy), keys as timm names them (`blocks.0.attn.qkv.weight`, ...)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mcuformer_tf.errors import McuformerError

SUFFIXES = (".safetensors", ".npz")


def check_state_dict_path(path) -> Path:
    """The path, or McuformerError naming why it cannot be a state dict (before loading anything)."""
    path = Path(path).expanduser()
    if path.suffix not in SUFFIXES:
        raise McuformerError(f"--init-from {path}: give a .safetensors or .npz state dict")
    if not path.is_file():
        raise McuformerError(f"--init-from {path}: no such file")
    return path


def load_state_dict(path) -> dict[str, np.ndarray]:
    """{timm key: float32 array} of the state dict at `path`."""
    path = check_state_dict_path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                tensors = {key: archive[key] for key in archive.files}
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
    except Exception as err:  # any unreadable file means the same thing to the user
        raise McuformerError(f"--init-from {path}: not a readable {path.suffix} state dict "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return {key: np.asarray(value, np.float32) for key, value in tensors.items()}
