"""Data specs (`digits`, `imagefolder:PATH`, `cifar10:PATH`, `tfds:NAME[:TRAIN,VAL]`; see `data`)
checked without loading anything, so a command refuses a bad one before TensorFlow is imported."""
from __future__ import annotations

from pathlib import Path

from mcuformer_tf.errors import McuformerError

SOURCES = ("digits", "imagefolder:PATH", "cifar10:PATH", "tfds:NAME[:TRAIN,VAL]")


def existing_dir(path: str, source: str) -> Path:
    """The folder of `source:path`, or McuformerError naming what is missing."""
    if not path:
        raise McuformerError(f"data {source}: give a path, as {source}:PATH")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise McuformerError(f"data {source}:{path}: no such directory")
    return folder


def parse_tfds_spec(spec: str) -> tuple[str, tuple[str, str] | None]:
    """(NAME, (TRAIN, VAL) or None) of `tfds:NAME[:TRAIN,VAL]`; NAME may hold `/config` and `:version`."""
    parts = spec.split(":")[1:]
    splits = None
    if len(parts) > 1 and "," in parts[-1]:
        train, _, val = parts.pop().partition(",")
        if not train or not val or "," in val:
            raise McuformerError(f"data {spec}: give the splits as TRAIN,VAL, e.g. tfds:cifar10:train,test")
        splits = (train, val)
    name = ":".join(parts)
    if not name:
        raise McuformerError("data tfds: give a data set name, as tfds:NAME (e.g. tfds:imagenet2012)")
    return name, splits


def check_data_spec(spec: str, data_dir: str | None = None) -> None:
    """McuformerError, in one line, for an unknown source or a missing folder."""
    source, _, path = spec.partition(":")
    if data_dir is not None and source != "tfds":
        raise McuformerError(f"--data-dir serves tfds: data only, not {spec}")
    if source == "digits" and not path:
        return
    if source in ("cifar10", "imagefolder"):
        existing_dir(path, source)
        return
    if source == "tfds":
        parse_tfds_spec(spec)
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise McuformerError(f"--data-dir {data_dir}: no such directory")
        return
    raise McuformerError(f"unknown data {spec!r} (use one of: {', '.join(SOURCES)})")
