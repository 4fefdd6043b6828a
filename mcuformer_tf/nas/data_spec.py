"""Data specs (`digits`, `imagefolder:PATH`, `cifar10:PATH`; see `data`) checked without loading
anything, so a command refuses a bad one before TensorFlow is imported."""
from __future__ import annotations

from pathlib import Path

from mcuformer_tf.errors import McuformerError

SOURCES = ("digits", "imagefolder:PATH", "cifar10:PATH")


def existing_dir(path: str, source: str) -> Path:
    """The folder of `source:path`, or McuformerError naming what is missing."""
    if not path:
        raise McuformerError(f"data {source}: give a path, as {source}:PATH")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise McuformerError(f"data {source}:{path}: no such directory")
    return folder


def check_data_spec(spec: str) -> None:
    """McuformerError, in one line, for an unknown source or a missing folder."""
    source, _, path = spec.partition(":")
    if source == "digits" and not path:
        return
    if source in ("cifar10", "imagefolder"):
        existing_dir(path, source)
        return
    raise McuformerError(f"unknown data {spec!r} (use one of: {', '.join(SOURCES)})")
