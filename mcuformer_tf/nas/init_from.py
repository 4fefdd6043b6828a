"""A pretrained DeiT/ViT (timm's state dict) as the supernet's starting point.

What DeiT has fills the leading slices the supernet shares: its embed width, its heads, its
MLP width, its blocks. Each linear layer W (timm's `weight`, [out, in]) goes into the low-rank
factors by SVD, W^T = U diag(sigma) V^T: A = U, S = sigma, B = V^T, so the leading rank-r slice
that a subnet takes is the best rank-r approximation of W (Eckart-Young); its error is the
norm of the dropped singular values. The patch kernel and the position table are stored so that
the supernet's own resizing gives back DeiT's exactly at DeiT's patch size and grid (the
minimum-norm preimage through the bilinear resize), and other sizes resize from there. DeiT's
input normalisation (ImageNet mean and std) folds into the patch embedding, since the supernet
takes images in [0, 1]. The class token, its position row (and a distilled DeiT's distillation
token) have no place: this family pools the tokens' mean, and computes QuickGELU where DeiT
computed GELU, so a loaded subnet is near DeiT, not equal, until it trains. Channels, heads,
blocks and ranks DeiT lacks keep their fresh initialisation, and a head of another class count
stays fresh.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.state_dict import load_state_dict
from mcuformer_tf.nas.supernet import Supernet

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
LINEARS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
NORMS = {"ln1": "norm1", "ln2": "norm2"}


@dataclasses.dataclass
class InitReport:
    used: list[str]
    unused: list[str]
    notes: list[str]

    def lines(self) -> list[str]:
        return ([f"init-from: used {len(self.used)} tensors ({', '.join(_group(self.used))})",
                 f"init-from: not used {len(self.unused)} ({', '.join(self.unused) or 'none'})"]
                + [f"init-from: {note}" for note in self.notes])


def _group(keys):
    """Keys with block indices folded: blocks.*.attn.qkv.weight once."""
    seen = []
    for key in keys:
        parts = key.split(".")
        folded = ".".join("*" if p.isdigit() and i == 1 else p for i, p in enumerate(parts))
        if folded not in seen:
            seen.append(folded)
    return seen


def resize_matrix(source: int, target: int) -> np.ndarray:
    """[target, source]: tf.image.resize's bilinear map of a length-`source` signal to `target`."""
    basis = np.eye(source, dtype=np.float32).reshape(source, source, 1, 1)
    return tf.image.resize(basis, [target, 1], method="bilinear").numpy()[:, :, 0, 0].T


def resize_preimage(values: np.ndarray, stored: int) -> np.ndarray:
    """[stored, stored, ...] whose bilinear resize to values' [n, n] gives `values` back
    (minimum norm; exact where n <= stored)."""
    inverse = np.linalg.pinv(resize_matrix(stored, values.shape[0]))
    return np.einsum("ia,jb,ab...->ij...", inverse, inverse, values).astype(np.float32)


def svd_factors(weight: np.ndarray):
    """(U, sigma, V^T) of W^T [in, out] from timm's weight [out, in] (TensorFlow's SVD, in float64:
    numpy's LAPACK threads crawl beside TensorFlow's on a small machine)."""
    sigma, u, v = tf.linalg.svd(tf.constant(weight.T, tf.float64))
    return (u.numpy().astype(np.float32), sigma.numpy().astype(np.float32),
            v.numpy().T.astype(np.float32))


class _Loader:
    def __init__(self, supernet: Supernet, tensors: dict):
        self.supernet, self.tensors, self.used, self.notes = supernet, tensors, [], []

    def take(self, key):
        if key not in self.tensors:
            raise McuformerError(f"--init-from: the state dict has no {key} (not a timm ViT/DeiT?)")
        self.used.append(key)
        return self.tensors[key]

    @staticmethod
    def assign(variable, index, value):
        full = variable.numpy()
        full[index] = value
        variable.assign(full)

    def fits(self, what, have, room):
        if have > room:
            raise McuformerError(f"--init-from: DeiT's {what} {have} exceeds the supernet's {room}")

    def patch_embedding(self):
        layer = self.supernet.patch_embed
        weight = self.take("patch_embed.proj.weight").transpose(2, 3, 1, 0)  # [p, p, c, e]
        bias = self.take("patch_embed.proj.bias")
        patch, embed = weight.shape[0], weight.shape[3]
        self.fits("embed width", embed, layer.kernel.shape[3])
        folded = weight / IMAGENET_STD[None, None, :, None]
        bias = bias - np.einsum("hwce,c->e", folded, IMAGENET_MEAN)
        stored = resize_preimage(folded, layer.max_patch) * (patch / layer.max_patch) ** 2
        self.assign(layer.kernel, np.s_[..., :embed], stored)
        self.assign(layer.bias, np.s_[:embed], bias)
        return embed, patch

    def position_table(self, embed):
        table = self.take("pos_embed")[0]
        grid = int(np.sqrt(table.shape[0]))
        prefix = table.shape[0] - grid * grid
        self.notes.append(f"pos_embed: {prefix} class/distillation row(s) dropped, the {grid}x{grid} "
                          f"grid stored for the supernet's {self.supernet.pos_embed.max_grid}x"
                          f"{self.supernet.pos_embed.max_grid}")
        self.fits("position grid", grid, self.supernet.pos_embed.max_grid)
        stored = resize_preimage(table[prefix:].reshape(grid, grid, embed), self.supernet.pos_embed.max_grid)
        self.assign(self.supernet.pos_embed.table, np.s_[..., :embed], stored)

    def norm(self, layer, prefix):
        gamma, beta = self.take(f"{prefix}.weight"), self.take(f"{prefix}.bias")
        self.assign(layer.gamma, np.s_[:len(gamma)], gamma)
        self.assign(layer.beta, np.s_[:len(beta)], beta)

    def linear(self, layer, prefix):
        weight, bias = self.take(f"{prefix}.weight"), self.take(f"{prefix}.bias")
        out_dim, in_dim = weight.shape
        units = out_dim // layer.groups
        self.fits(f"{prefix} width", units, layer.b.shape[2])
        self.fits(f"{prefix} input", in_dim, layer.a.shape[0])
        u, sigma, vt = svd_factors(weight)
        rank = min(len(sigma), layer.a.shape[1])
        self.assign(layer.a, np.s_[:in_dim, :rank], u[:, :rank])
        self.assign(layer.s, np.s_[:rank], sigma[:rank])
        self.assign(layer.b, np.s_[:rank, :, :units], vt[:rank].reshape(rank, layer.groups, units))
        self.assign(layer.bias, np.s_[:, :units], bias.reshape(layer.groups, units))
        return rank < len(sigma)

    def blocks(self):
        depth = 1 + max((int(k.split(".")[1]) for k in self.tensors if k.startswith("blocks.")), default=-1)
        self.fits("depth", depth, len(self.supernet.blocks))
        truncated = set()
        for index in range(depth):
            block = self.supernet.blocks[index]
            for name, prefix in NORMS.items():
                self.norm(getattr(block, name), f"blocks.{index}.{prefix}")
            for name, prefix in LINEARS.items():
                if self.linear(getattr(block, name), f"blocks.{index}.{prefix}"):
                    truncated.add(name)
        if truncated:
            self.notes.append(f"{', '.join(sorted(truncated))}: truncated to the supernet's stored rank")
        self.notes.append(f"{depth} of {len(self.supernet.blocks)} blocks from DeiT; QuickGELU "
                          "replaces GELU, mean pooling the class token")

    def head(self, embed):
        weight = self.tensors.get("head.weight")
        if weight is None or weight.shape[0] != self.supernet.space.num_classes:
            self.notes.append("head: kept fresh (the state dict's classes differ from the space's)")
            return
        self.assign(self.supernet.head_kernel, np.s_[:embed], weight.T)
        self.supernet.head_bias.assign(self.take("head.bias"))
        self.used.append("head.weight")


def init_supernet(supernet: Supernet, path) -> InitReport:
    """Load the timm state dict at `path` into `supernet` (see the module docstring)."""
    tensors = load_state_dict(path)
    loader = _Loader(supernet, tensors)
    embed, _ = loader.patch_embedding()
    loader.position_table(embed)
    loader.blocks()
    loader.norm(supernet.norm, "norm")
    loader.head(embed)
    unused = [key for key in tensors if key not in loader.used]
    return InitReport(loader.used, unused, loader.notes)
