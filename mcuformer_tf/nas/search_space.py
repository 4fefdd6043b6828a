"""Search spaces and subnet configs: the low-rank ViT family of DESIGN.md §4.

A `SubnetConfig` names one ViT (image and patch size, rank ratio, embedding
width, depth and per-layer heads and MLP ratio) and the width its weights are
stored in (`weight_bits`: 8, or 4 for packed INT4); a `SearchSpace` holds the
choices of every dimension. Weight bits are no part of the supernet (any subnet
exports at either width): a space's `weight_bits` lists what a search draws
from (8 alone unless a file or `tune --weight-bits` says otherwise), and both
leave the field out of their files at its default, 8, so files written before
it existed read and resume unchanged. Both round-trip through YAML/JSON, validate with
one-line errors naming the bad field, and need no TensorFlow, so the tuner's
memory oracle and the CLI's checks stay fast.

The integer widths every part of the chain must agree on live here too:
`mlp_hidden` (MLP width) and `low_rank` (rank of a low-rank linear layer).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from mcuformer_tf.errors import McuformerError

HEAD_DIM = 64
"""Width of one attention head (fixed, as in DeiT and AutoFormer)."""

PRESETS = ("deit-tiny-mcu", "deit-tiny-mcu-int4", "digits")
WEIGHT_BITS = (4, 8)
"""Widths a subnet's linear and patch-embedding weights can be stored in (8: int8, 4: packed INT4)."""
DEFAULT_WEIGHT_BITS = 8


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


@functools.cache  # a few dozen distinct arguments per space; Fractions are slow
def mlp_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of an MLP: mlp_ratio * embed_dim, rounded half up."""
    return _round_half_up(Fraction(str(mlp_ratio)) * embed_dim)


@functools.cache
def low_rank(in_dim: int, out_dim: int, rank_ratio: float) -> int:
    """Rank of a low-rank linear layer: rank_ratio * min(in, out), rounded half up, at least 1.

    Exact decimal arithmetic, so 0.45 * 10 is 5 on every machine.
    """
    return max(1, _round_half_up(Fraction(str(rank_ratio)) * min(in_dim, out_dim)))


def keeps_dense(in_dim: int, out_dim: int, rank: int) -> bool:
    """True where the factors A (in x rank) and B (rank x out) hold no fewer weights than W."""
    return rank * (in_dim + out_dim) >= in_dim * out_dim


@dataclasses.dataclass(frozen=True)
class LinearShape:
    """One low-rank linear layer of a subnet: W (in x out) ~ A (in x rank) . B (rank x out)."""

    in_dim: int
    out_dim: int
    rank: int

    @property
    def dense(self) -> bool:
        return keeps_dense(self.in_dim, self.out_dim, self.rank)

    @property
    def weight_count(self) -> int:
        """Weights after extraction (one dense kernel, or the two factors), plus the bias."""
        kernel = self.in_dim * self.out_dim if self.dense else self.rank * (self.in_dim + self.out_dim)
        return kernel + self.out_dim


def _field_error(field: str, message: str) -> McuformerError:
    return McuformerError(f"{field}: {message}")


def _check_fields(data: Any, fields: Sequence[str], what: str) -> None:
    """`data` must be a mapping with exactly `fields` as keys."""
    if not isinstance(data, dict):
        raise McuformerError(f"{what} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _field_error(unknown[0], f"unknown field (known: {', '.join(fields)})")
    missing = [f for f in fields if f not in data]
    if missing:
        raise _field_error(missing[0], "missing")


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _field_error(field, f"expected an integer, got {value!r}")
    if value < 1:
        raise _field_error(field, f"must be at least 1, got {value!r}")
    return int(value)


def _as_ratio(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _field_error(field, f"expected a number, got {value!r}")
    if not value > 0:
        raise _field_error(field, f"must be positive, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class SubnetConfig:
    """One ViT of the family: every width the model and the memory model need."""

    image_size: int
    patch_size: int
    rank_ratio: float
    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    num_classes: int
    weight_bits: int = DEFAULT_WEIGHT_BITS

    def __post_init__(self):
        if self.weight_bits not in WEIGHT_BITS:
            raise _field_error("weight_bits", f"must be one of {', '.join(map(str, WEIGHT_BITS))}, "
                                              f"got {self.weight_bits!r}")
        if self.image_size % self.patch_size:
            raise _field_error(
                "patch_size",
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}",
            )
        if not 0 < self.rank_ratio <= 1:
            raise _field_error("rank_ratio", f"must be in (0, 1], got {self.rank_ratio}")
        for name in ("num_heads", "mlp_ratio"):
            if len(getattr(self, name)) != self.depth:
                raise _field_error(
                    name, f"has {len(getattr(self, name))} entries but depth is {self.depth}"
                )

    # -- derived widths -------------------------------------------------------
    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def attn_dim(self, layer: int) -> int:
        return self.num_heads[layer] * HEAD_DIM

    def hidden_dim(self, layer: int) -> int:
        return mlp_hidden(self.embed_dim, self.mlp_ratio[layer])

    def linear_shapes(self, layer: int) -> dict[str, LinearShape]:
        """The four low-rank linear layers of block `layer`: qkv, proj, fc1, fc2."""
        e, a, h = self.embed_dim, self.attn_dim(layer), self.hidden_dim(layer)
        dims = {"qkv": (e, 3 * a), "proj": (a, e), "fc1": (e, h), "fc2": (h, e)}
        return {
            name: LinearShape(i, o, low_rank(i, o, self.rank_ratio)) for name, (i, o) in dims.items()
        }

    def parameter_count(self) -> int:
        """Parameters of the extracted subnet, in closed form."""
        e = self.embed_dim
        count = self.patch_size ** 2 * 3 * e + e  # patch embedding conv
        count += self.num_tokens * e  # position embedding
        for layer in range(self.depth):
            count += 2 * 2 * e  # ln1, ln2
            count += sum(s.weight_count for s in self.linear_shapes(layer).values())
        return count + 2 * e + e * self.num_classes + self.num_classes  # final norm, head

    def mac_count(self) -> int:
        """Multiply-accumulates of one image through the extracted subnet, in closed form.

        Patch embedding, every linear layer (one dense kernel or its two factors, per token),
        the two attention matmuls (Q.K^T and A.V, per head and query row) and the head;
        LayerNorm, softmax, QuickGELU and the residual adds are elementwise and not counted.
        """
        n, e = self.num_tokens, self.embed_dim
        macs = n * self.patch_size ** 2 * 3 * e
        for layer in range(self.depth):
            for shape in self.linear_shapes(layer).values():
                macs += n * (shape.weight_count - shape.out_dim)
            macs += 2 * self.num_heads[layer] * n * n * HEAD_DIM
        return macs + e * self.num_classes

    # -- (de)serialisation ----------------------------------------------------
    def to_dict(self) -> dict:
        """The config as a mapping; `weight_bits` only where it is not 8 (module docstring)."""
        out = {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "rank_ratio": self.rank_ratio,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": list(self.num_heads),
            "mlp_ratio": list(self.mlp_ratio),
            "num_classes": self.num_classes,
        }
        if self.weight_bits != DEFAULT_WEIGHT_BITS:
            out["weight_bits"] = self.weight_bits
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "SubnetConfig":
        """Build from a mapping; a scalar num_heads or mlp_ratio applies to every layer; no
        weight_bits: 8."""
        if isinstance(data, dict) and "weight_bits" not in data:
            data = {**data, "weight_bits": DEFAULT_WEIGHT_BITS}
        _check_fields(data, [f.name for f in dataclasses.fields(cls)], "a subnet config")
        depth = _as_int("depth", data["depth"])

        def per_layer(name, convert):
            value = data[name]
            if not isinstance(value, (list, tuple)):
                value = [value] * depth
            return tuple(convert(f"{name}[{i}]", v) for i, v in enumerate(value))

        return cls(
            image_size=_as_int("image_size", data["image_size"]),
            patch_size=_as_int("patch_size", data["patch_size"]),
            rank_ratio=_as_ratio("rank_ratio", data["rank_ratio"]),
            embed_dim=_as_int("embed_dim", data["embed_dim"]),
            depth=depth,
            num_heads=per_layer("num_heads", _as_int),
            mlp_ratio=per_layer("mlp_ratio", _as_ratio),
            num_classes=_as_int("num_classes", data["num_classes"]),
            weight_bits=_as_int("weight_bits", data["weight_bits"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "SubnetConfig":
        """Read a config from a .json or .yaml file."""
        return cls.from_dict(_read_mapping(path, "subnet config"))

    def describe(self) -> str:
        heads = ",".join(map(str, self.num_heads))
        ratios = ",".join(f"{r:g}" for r in self.mlp_ratio)
        bits = "" if self.weight_bits == DEFAULT_WEIGHT_BITS else f" w{self.weight_bits}"
        return (
            f"img{self.image_size}/p{self.patch_size} e{self.embed_dim} d{self.depth} "
            f"h[{heads}] mlp[{ratios}] r{self.rank_ratio:g}{bits}"
        )


def _read_mapping(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise McuformerError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise McuformerError(f"{path} is not valid YAML/JSON: {first_line}") from None


def _choices(field: str, value: Any, convert) -> tuple:
    if not isinstance(value, (list, tuple)):
        value = [value]
    if not value:
        raise _field_error(field, "has no choices")
    converted = [convert(f"{field}[{i}]", v) for i, v in enumerate(value)]
    if len(set(converted)) != len(converted):
        raise _field_error(field, f"lists a choice twice: {list(value)}")
    return tuple(sorted(converted))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The choices of every dimension of the family; per-layer choices are shared by all layers."""

    name: str
    num_classes: int
    image_size: tuple[int, ...]
    patch_size: tuple[int, ...]
    embed_dim: tuple[int, ...]
    depth: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    rank_ratio: tuple[float, ...]
    weight_bits: tuple[int, ...] = (DEFAULT_WEIGHT_BITS,)

    def __post_init__(self):
        for bits in self.weight_bits:
            if bits not in WEIGHT_BITS:
                raise _field_error("weight_bits", f"must be one of {', '.join(map(str, WEIGHT_BITS))}, got {bits}")
        for ratio in self.rank_ratio:
            if ratio > 1:
                raise _field_error("rank_ratio", f"must be in (0, 1], got {ratio}")
        for patch in self.patch_size:
            if not any(image % patch == 0 for image in self.image_size):
                raise _field_error(
                    "patch_size",
                    f"{patch} divides no image_size of the space {list(self.image_size)}",
                )

    DIMENSIONS = ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                  "rank_ratio")

    @classmethod
    def from_dict(cls, data: Any) -> "SearchSpace":
        """Build from a mapping; no weight_bits: [8]."""
        if isinstance(data, dict) and "weight_bits" not in data:
            data = {**data, "weight_bits": [DEFAULT_WEIGHT_BITS]}
        _check_fields(data, ("name", "num_classes", "weight_bits") + cls.DIMENSIONS, "a search space")
        return cls(
            name=str(data["name"]),
            num_classes=_as_int("num_classes", data["num_classes"]),
            image_size=_choices("image_size", data["image_size"], _as_int),
            patch_size=_choices("patch_size", data["patch_size"], _as_int),
            embed_dim=_choices("embed_dim", data["embed_dim"], _as_int),
            depth=_choices("depth", data["depth"], _as_int),
            num_heads=_choices("num_heads", data["num_heads"], _as_int),
            mlp_ratio=_choices("mlp_ratio", data["mlp_ratio"], _as_ratio),
            rank_ratio=_choices("rank_ratio", data["rank_ratio"], _as_ratio),
            weight_bits=_choices("weight_bits", data["weight_bits"], _as_int),
        )

    def to_dict(self) -> dict:
        """The space as a mapping; `weight_bits` only where it is not [8] (module docstring)."""
        out = {"name": self.name, "num_classes": self.num_classes}
        out.update({dim: list(getattr(self, dim)) for dim in self.DIMENSIONS})
        if self.weight_bits != (DEFAULT_WEIGHT_BITS,):
            out["weight_bits"] = list(self.weight_bits)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A preset by name (`digits`, `deit-tiny-mcu`) or a YAML/JSON file."""
        if str(name_or_path) in PRESETS:
            text = resources.files("mcuformer_tf.nas.presets").joinpath(f"{name_or_path}.yaml")
            return cls.from_dict(yaml.safe_load(text.read_text()))
        path = Path(name_or_path)
        if path.suffix.lower() not in (".yaml", ".yml", ".json") and not path.exists():
            raise McuformerError(
                f"unknown search space preset {str(name_or_path)!r} "
                f"(presets: {', '.join(PRESETS)}; or give a .yaml/.json file)"
            )
        return cls.from_dict(_read_mapping(path, "search space"))

    # -- membership -----------------------------------------------------------
    def validate(self, config: SubnetConfig) -> None:
        """Raise a one-line error naming the first field of `config` outside this space (weight
        bits apart: they are a choice of the export, not of the supernet)."""
        if config.num_classes != self.num_classes:
            raise _field_error(
                "num_classes", f"{config.num_classes} but the space {self.name!r} has {self.num_classes}"
            )
        scalar = ("image_size", "patch_size", "embed_dim", "depth", "rank_ratio")
        checks = [(f, getattr(config, f), getattr(self, f)) for f in scalar]
        for name in ("num_heads", "mlp_ratio"):
            checks += [(f"{name}[{i}]", v, getattr(self, name))
                       for i, v in enumerate(getattr(config, name))]
        for field, value, allowed in checks:
            if value not in allowed:
                raise _field_error(
                    field,
                    f"{value} is not in the space {self.name!r} (choices: "
                    f"{', '.join(f'{c:g}' for c in allowed)})",
                )

    def contains(self, config: SubnetConfig) -> bool:
        try:
            self.validate(config)
        except McuformerError:
            return False
        return True

    # -- sampling ---------------------------------------------------------------
    def image_patch_pairs(self) -> list[tuple[int, int]]:
        """Every (image_size, patch_size) pair of the space whose patch divides the image."""
        return [(i, p) for i in self.image_size for p in self.patch_size if i % p == 0]

    def make(self, image_size: int, patch_size: int, rank_ratio: float, embed_dim: int,
             num_heads: Sequence[int], mlp_ratio: Sequence[float],
             weight_bits: int = DEFAULT_WEIGHT_BITS) -> SubnetConfig:
        return SubnetConfig(
            image_size=image_size, patch_size=patch_size, rank_ratio=rank_ratio,
            embed_dim=embed_dim, depth=len(num_heads), num_heads=tuple(num_heads),
            mlp_ratio=tuple(mlp_ratio), num_classes=self.num_classes, weight_bits=weight_bits,
        )

    def draw_weight_bits(self, rng: random.Random) -> int:
        """A random weight width of the space; with one choice no draw (so a space of one width
        draws the same configs as before weight widths were a dimension)."""
        return rng.choice(self.weight_bits) if len(self.weight_bits) > 1 else self.weight_bits[0]

    def sample(self, rng: random.Random) -> SubnetConfig:
        """A uniformly random config (the image/patch pair uniform over divisible pairs)."""
        image, patch = rng.choice(self.image_patch_pairs())
        depth = rng.choice(self.depth)
        return self.make(
            image, patch, rng.choice(self.rank_ratio), rng.choice(self.embed_dim),
            [rng.choice(self.num_heads) for _ in range(depth)],
            [rng.choice(self.mlp_ratio) for _ in range(depth)], self.draw_weight_bits(rng),
        )

    def _extreme(self, pick, tokens_key) -> SubnetConfig:
        image, patch = pick(self.image_patch_pairs(), key=tokens_key)
        depth = pick(self.depth)
        return self.make(image, patch, pick(self.rank_ratio), pick(self.embed_dim),
                         [pick(self.num_heads)] * depth, [pick(self.mlp_ratio)] * depth,
                         pick(self.weight_bits))

    def smallest(self) -> SubnetConfig:
        """Fewest tokens (smaller image on ties) and the smallest choice everywhere else (the
        fewest weight bits too)."""
        return self._extreme(min, lambda ip: ((ip[0] // ip[1]) ** 2, ip[0]))

    def largest(self) -> SubnetConfig:
        """Most tokens (larger image on ties) and the largest choice everywhere else."""
        return self._extreme(max, lambda ip: ((ip[0] // ip[1]) ** 2, ip[0]))

    def sample_many(self, count: int, seed: int) -> list[SubnetConfig]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(count)]

    # -- supernet extents -------------------------------------------------------
    @property
    def max_grid(self) -> int:
        return max(i // p for i, p in self.image_patch_pairs())

    def resolve_config(self, spec: str | Path) -> SubnetConfig:
        """`largest`, `smallest`, or a config file that must lie in this space."""
        if str(spec) == "largest":
            return self.largest()
        if str(spec) == "smallest":
            return self.smallest()
        config = SubnetConfig.load(spec)
        self.validate(config)
        return config
