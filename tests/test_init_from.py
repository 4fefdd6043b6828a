"""--init-from: a timm-format DeiT state dict mapped onto the supernet (synthetic weights, timm's
key names): its subnet at full rank computes the same ViT as the weights loaded by hand, lower
ranks hold the truncated SVD, and bad files get one line."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from safetensors.numpy import save_file

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.init_from import IMAGENET_MEAN, IMAGENET_STD, init_supernet, svd_factors
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from mcuformer_tf.nas.supernet import Supernet

EMBED, HEADS, HIDDEN, DEPTH, PATCH, GRID, CLASSES = 128, 2, 256, 2, 8, 4, 10
SPACE = SearchSpace.from_dict({
    "name": "tiny-deit", "num_classes": CLASSES, "image_size": [32], "patch_size": [8, 16],
    "embed_dim": [96, 128, 160], "depth": [2, 3], "num_heads": [1, 2, 3], "mlp_ratio": [2, 3],
    "rank_ratio": [0.25, 0.5, 1.0]})


def _timm_state_dict(seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape, std=0.05):
        return rng.normal(0, std, shape).astype(np.float32)

    tensors = {"cls_token": normal(1, 1, EMBED), "pos_embed": normal(1, 1 + GRID * GRID, EMBED),
               "patch_embed.proj.weight": normal(EMBED, 3, PATCH, PATCH),
               "patch_embed.proj.bias": normal(EMBED), "norm.weight": 1 + normal(EMBED),
               "norm.bias": normal(EMBED), "head.weight": normal(CLASSES, EMBED),
               "head.bias": normal(CLASSES)}
    for i in range(DEPTH):
        shapes = {"attn.qkv": (3 * EMBED, EMBED), "attn.proj": (EMBED, EMBED),
                  "mlp.fc1": (HIDDEN, EMBED), "mlp.fc2": (EMBED, HIDDEN)}
        for name, (out_dim, in_dim) in shapes.items():
            tensors[f"blocks.{i}.{name}.weight"] = normal(out_dim, in_dim, std=0.1)
            tensors[f"blocks.{i}.{name}.bias"] = normal(out_dim)
        for norm in ("norm1", "norm2"):
            tensors[f"blocks.{i}.{norm}.weight"] = 1 + normal(EMBED)
            tensors[f"blocks.{i}.{norm}.bias"] = normal(EMBED)
    return tensors


def _layer_norm(x, gamma, beta):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * gamma + beta


def _reference_vit(t, images):
    """Our family's ViT (mean pooling, QuickGELU, heads of 64) on DeiT's weights, in numpy."""
    x = (images - IMAGENET_MEAN) / IMAGENET_STD
    b = x.shape[0]
    patches = x.reshape(b, GRID, PATCH, GRID, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    kernel = t["patch_embed.proj.weight"].transpose(2, 3, 1, 0).reshape(-1, EMBED)
    x = patches.reshape(b, GRID * GRID, -1) @ kernel + t["patch_embed.proj.bias"]
    x = x + t["pos_embed"][0, 1:]
    for i in range(DEPTH):
        p = f"blocks.{i}."

        def linear(y, name):
            return y @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        qkv = linear(_layer_norm(x, t[p + "norm1.weight"], t[p + "norm1.bias"]), "attn.qkv")
        q, k, v = qkv.reshape(b, -1, 3, HEADS, 64).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2) / 8.0
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + linear((weights @ v).transpose(0, 2, 1, 3).reshape(b, -1, EMBED), "attn.proj")
        y = linear(_layer_norm(x, t[p + "norm2.weight"], t[p + "norm2.bias"]), "mlp.fc1")
        x = x + linear(y / (1 + np.exp(-1.702 * y)), "mlp.fc2")
    pooled = _layer_norm(x, t["norm.weight"], t["norm.bias"]).mean(1)
    return pooled @ t["head.weight"].T + t["head.bias"]


def _config(rank_ratio):
    return SubnetConfig.from_dict({"num_classes": CLASSES, "image_size": 32, "patch_size": PATCH,
                                   "embed_dim": EMBED,
                                   "depth": DEPTH, "num_heads": HEADS, "mlp_ratio": 2,
                                   "rank_ratio": rank_ratio})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tensors = _timm_state_dict()
    path = tmp_path_factory.mktemp("deit") / "deit_synthetic.safetensors"
    save_file(tensors, str(path))
    tf.keras.utils.set_random_seed(0)
    supernet = Supernet(SPACE)
    return tensors, supernet, init_supernet(supernet, path)


def test_full_rank_subnet_equals_deit_loaded_by_hand(loaded):
    tensors, supernet, report = loaded
    images = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    supernet.set_active(_config(1.0))
    np.testing.assert_allclose(supernet(images).numpy(), _reference_vit(tensors, images),
                               atol=2e-4, rtol=1e-3)
    assert report.unused == ["cls_token"]
    assert len(report.used) == len(tensors) - 1
    assert any("1 class/distillation row(s) dropped" in line for line in report.lines())


def test_lower_ranks_hold_the_truncated_svd(loaded):
    tensors, supernet, _ = loaded
    weight = tensors["blocks.1.mlp.fc1.weight"].T  # [in 128, out 256]
    u, sigma, vt = svd_factors(weight.T)
    for rank in (32, 64):  # rank ratios 0.25 and 0.5 of min(128, 256)
        a, b, _ = supernet.blocks[1].fc1.factors(EMBED, HIDDEN, rank)
        approximation = (a @ b).numpy()
        np.testing.assert_allclose(approximation, (u[:, :rank] * sigma[:rank]) @ vt[:rank], atol=1e-4)
        error = np.linalg.norm(approximation - weight)  # Eckart-Young: the dropped singular values
        np.testing.assert_allclose(error, np.sqrt(np.sum(sigma[rank:] ** 2)), rtol=1e-3)


def test_what_deit_lacks_keeps_its_fresh_initialisation(loaded):
    _, supernet, _ = loaded
    tf.keras.utils.set_random_seed(0)
    fresh = Supernet(SPACE)
    for mine, theirs in zip(supernet.blocks[2].weights, fresh.blocks[2].weights):  # DeiT has 2 blocks
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    np.testing.assert_array_equal(supernet.blocks[0].fc1.b.numpy()[:, :, HIDDEN:],  # mlp ratio 3
                                  fresh.blocks[0].fc1.b.numpy()[:, :, HIDDEN:])
    assert not np.allclose(supernet.blocks[0].fc1.b.numpy()[:, :, :HIDDEN],
                           fresh.blocks[0].fc1.b.numpy()[:, :, :HIDDEN])


def test_npz_and_bad_files(tmp_path):
    tensors = _timm_state_dict()
    np.savez(tmp_path / "deit.npz", **tensors)
    supernet = Supernet(SPACE)
    assert init_supernet(supernet, tmp_path / "deit.npz").unused == ["cls_token"]
    (tmp_path / "broken.safetensors").write_bytes(b"not a state dict")
    with pytest.raises(McuformerError, match="not a readable .safetensors state dict"):
        init_supernet(supernet, tmp_path / "broken.safetensors")
    with pytest.raises(McuformerError, match="no such file"):
        init_supernet(supernet, tmp_path / "missing.npz")
    with pytest.raises(McuformerError, match="give a .safetensors or .npz"):
        init_supernet(supernet, tmp_path / "deit.pth")
    del tensors["blocks.0.attn.qkv.weight"]
    np.savez(tmp_path / "partial.npz", **tensors)
    with pytest.raises(McuformerError, match="has no blocks.0.attn.qkv.weight"):
        init_supernet(supernet, tmp_path / "partial.npz")


@pytest.mark.slow
def test_train_cli_from_deit_with_the_deit_recipe_in_bfloat16(tmp_path):
    """The whole path once: imagefolder crops, the deit recipe, bfloat16, --init-from, a checkpoint."""
    import json

    import yaml
    from cli_runner import run_cli

    from mcuformer_tf.nas.run_dir import RunDir

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b", "c", "d"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(4):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / name / f"{index}.jpg")
    space = {**SPACE.to_dict(), "num_classes": 4, "depth": [2], "embed_dim": [128], "num_heads": [2],
             "mlp_ratio": [2], "patch_size": [8]}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    np.savez(tmp_path / "deit.npz", **_timm_state_dict())
    result = run_cli("train", "--space", tmp_path / "space.yaml", "--data", f"imagefolder:{tmp_path / 'data'}",
                     "--recipe", "deit", "--precision", "mixed_bfloat16", "--init-from", tmp_path / "deit.npz",
                     "--epochs", "1", "--batch-size", "8", "--random-subnets", "0", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "init-from: not used 3 (cls_token, head.weight, head.bias)" in result.output
    assert "head: kept fresh" in result.output  # 4 classes, DeiT's head has 10
    history = RunDir(tmp_path / "run").history()
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["settings"]["mixup"] == 0.8 and recorded["settings"]["precision"] == "mixed_bfloat16"
