"""A supernet training run on disk: what was trained, its checkpoints and its history.

    <run>/run.json       the search space, data spec and training settings
    <run>/checkpoints/   tf.train checkpoints, one per finished epoch (last 2 kept; a damaged
                         newest one is skipped on resume, saying so)
    <run>/history.json   one entry per finished epoch (loss, val accuracies, seconds)

Every file is written atomically (temp file + rename), so a killed run leaves
the last finished epoch intact.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.search_space import SearchSpace


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


class RunDir:
    """Paths and records of one training run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.spec_file = self.path / "run.json"
        self.history_file = self.path / "history.json"
        self.checkpoint_dir = self.path / "checkpoints"

    def exists(self) -> bool:
        return self.spec_file.is_file()

    def create(self, spec: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.spec_file, spec)

    def spec(self) -> dict:
        if not self.exists():
            raise McuformerError(f"{self.path} is not a training run (no run.json); "
                                 "train one with `mcuformer-tf train`")
        try:
            return json.loads(self.spec_file.read_text())
        except json.JSONDecodeError as err:
            raise McuformerError(f"{self.spec_file} is not valid JSON: {err}") from None

    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.spec()["space"])

    def history(self) -> list[dict]:
        if not self.history_file.is_file():
            return []
        return json.loads(self.history_file.read_text())

    def record_epoch(self, entry: dict) -> None:
        """Append `entry`, dropping any entry of the same or a later epoch (a re-run epoch)."""
        kept = [e for e in self.history() if e["epoch"] < entry["epoch"]]
        write_json_atomic(self.history_file, kept + [entry])

    def latest_checkpoint(self) -> str | None:
        import tensorflow as tf  # here: a run directory is read by commands that never import TF

        return tf.train.latest_checkpoint(str(self.checkpoint_dir))

    def good_checkpoint(self, warn=print) -> str | None:
        """The newest checkpoint whose every tensor reads back, or None; each newer one that is
        truncated or corrupt is skipped with one line to `warn` saying so."""
        numbered = [(int(m.group(1)), path) for path in self.checkpoint_dir.glob("ckpt-*.index")
                     if (m := re.fullmatch(r"ckpt-(\d+)", path.stem))]
        for _, index in sorted(numbered, reverse=True):
            prefix = str(index.with_suffix(""))
            problem = unreadable_checkpoint(prefix)
            if problem is None:
                return prefix
            warn(f"checkpoint {prefix} is damaged ({problem}): using the one before it")
        return None


def unreadable_checkpoint(prefix: str) -> str | None:
    """Why the tf.train checkpoint `prefix` cannot be read back in full (one line), or None."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as err:  # a short read is an IndexError
        return str(err).strip().splitlines()[0][:200]
    return None
