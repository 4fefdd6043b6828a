"""The training recipes: DeiT's augmentation (RandAugment, random erasing, mixup/cutmix on soft
labels), stochastic depth, the recipes' settings, and a bfloat16 sandwich step."""
import random

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas import rand_augment as ra
from mcuformer_tf.nas.augmentation import batch_mixer, random_erase
from mcuformer_tf.nas.data import load_digits
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.nas.supernet_layers import drop_path
from mcuformer_tf.nas.train_settings import TrainSettings, recipe_settings
from mcuformer_tf.nas.training import SandwichTrainer

TINY = SearchSpace.from_dict({"name": "tiny", "num_classes": 4, "image_size": [16], "patch_size": [8],
                              "embed_dim": [16, 32], "depth": [1, 2], "num_heads": [1],
                              "mlp_ratio": [2], "rank_ratio": [0.5, 1.0]})


def test_recipes_settings():
    assert recipe_settings("digits", 32) == TrainSettings()  # the demo trains as it did
    deit = recipe_settings("deit", 1024)
    assert deit.learning_rate == pytest.approx(1e-3)  # 5e-4 x 1024 / 512
    assert (deit.rand_augment, deit.mixup, deit.cutmix, deit.label_smoothing, deit.random_erasing,
            deit.drop_path, deit.warmup_epochs) == (9.0, 0.8, 1.0, 0.1, 0.25, 0.1, 5)
    assert recipe_settings("deit", 256, mixup=0.0, learning_rate=1e-4).mixup == 0.0
    with pytest.raises(McuformerError, match="unknown recipe 'bert'"):
        recipe_settings("bert", 32)
    with pytest.raises(McuformerError, match="precision"):
        recipe_settings("deit", 32, precision="int4")


def test_rand_augment_operations_on_known_images():
    ramp = tf.tile(tf.linspace(0.0, 1.0, 16)[None, :, None], [16, 1, 3])
    level, plus = tf.constant(0.9), tf.constant(1.0)
    np.testing.assert_allclose(ra._invert(ramp, level, plus), 1 - ramp.numpy())
    solarized = ra._solarize(ramp, level, plus).numpy()  # threshold (256 - 230) / 255
    np.testing.assert_allclose(solarized[0, :2, 0], ramp.numpy()[0, :2, 0])
    np.testing.assert_allclose(solarized[0, 2:, 0], 1 - ramp.numpy()[0, 2:, 0])
    posterized = np.round(ra._posterize(ramp, level, plus).numpy() * 255).astype(int)
    assert set(np.unique(posterized % 128)) == {0}  # 4 - int(3.6) = 1 bit kept
    narrow = 0.25 + 0.5 * ramp
    np.testing.assert_allclose(ra._auto_contrast(narrow, level, plus), ramp, atol=1e-6)
    shifted = ra._translate_x(ramp, tf.constant(2 / (0.45 * 16)), plus).numpy()  # 2 pixels right
    np.testing.assert_allclose(shifted[:, 2:], ramp.numpy()[:, :-2], atol=1e-6)
    np.testing.assert_allclose(shifted[:, :2], ra.GREY)
    np.testing.assert_allclose(ra._enhance(tf.zeros_like)(ramp, level, -plus), ramp * 0.19, atol=1e-6)
    tall = tf.tile(narrow, [4, 1, 1])  # 16 levels of 64 pixels each
    pil = ImageOps.equalize(Image.fromarray(np.round(tall.numpy() * 255).astype(np.uint8)))
    np.testing.assert_allclose(ra._equalize(tall, level, plus).numpy() * 255, np.asarray(pil), atol=1e-3)
    for op in ra.OPERATIONS:
        out = op(ramp, level, -plus).numpy()
        assert out.shape == (16, 16, 3) and 0 <= out.min() and out.max() <= 1, op


def test_rand_augment_applies_about_half_its_operations():
    tf.random.set_seed(0)
    image = tf.random.uniform([16, 16, 3])
    same = tf.data.Dataset.range(200).map(lambda _: tf.reduce_all(ra.rand_augment(image) == image))
    unchanged = sum(same.as_numpy_iterator())
    assert 32 <= unchanged <= 75  # both of 2 ops skipped: 1/4, plus a few no-op draws


def test_random_erasing_rate_and_box_area():
    tf.random.set_seed(1)
    image = tf.fill([40, 40, 3], -1.0)  # noise lies in [0, 1): erased pixels are >= 0
    areas = list(tf.data.Dataset.range(1000).map(
        lambda _: tf.reduce_mean(tf.cast(random_erase(image, 0.25)[..., 0] >= 0, tf.float32)))
        .as_numpy_iterator())
    erased = [a for a in areas if a > 0]
    assert 0.21 <= len(erased) / len(areas) <= 0.29
    assert 0.015 <= min(erased) and max(erased) <= 0.36  # 2-33%, sides rounded to pixels


def test_mixup_and_cutmix_mix_images_and_soft_labels_alike():
    tf.random.set_seed(2)
    mix = batch_mixer(recipe_settings("deit", 16))
    # image i is constant i / 16 and has class i % 4: mixing leaves each label's sum 1, and the
    # mixed image's mean equals the labels' weights applied to the partners' values
    images = tf.tile(tf.reshape(tf.range(16, dtype=tf.float32) / 16, [16, 1, 1, 1]), [1, 8, 8, 3])
    labels = tf.one_hot(tf.range(16), 16)  # one class per image, to read the partner off
    kinds = set()
    for _ in range(12):
        mixed, soft = (t.numpy() for t in mix(images, labels))
        assert mixed.shape == (16, 8, 8, 3) and soft.shape == (16, 16)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), soft @ (np.arange(16) / 16), atol=1e-5)
        np.testing.assert_array_equal(np.argsort(-soft, axis=1)[:, :2].max(axis=1) + np.argsort(
            -soft, axis=1)[:, :2].min(axis=1), 15)  # timm's partner: the batch reversed
        kinds.add("cutmix" if len(np.unique(mixed[0])) == 2 else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_drop_path_keeps_the_expectation():
    tf.random.set_seed(3)
    branch = tf.ones([20000, 4, 8])
    dropped = drop_path(branch, 0.1).numpy()
    per_example = dropped[:, 0, 0]
    np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.9], rtol=1e-6)
    assert np.all(dropped == per_example[:, None, None])  # whole examples, not elements
    assert dropped.mean() == pytest.approx(1.0, abs=0.02)
    assert (per_example == 0).mean() == pytest.approx(0.1, abs=0.01)


def test_supernet_drop_path_rises_by_block_and_is_off_in_inference():
    from mcuformer_tf.nas.supernet import Supernet

    tf.keras.utils.set_random_seed(0)
    supernet = Supernet(SearchSpace.load("digits"), drop_path=0.3)
    assert [b.drop_path_rate for b in supernet.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    images = tf.random.uniform([4, 32, 32, 3])
    np.testing.assert_array_equal(supernet(images, training=False), supernet(images, training=False))


@pytest.mark.slow
def test_a_bfloat16_sandwich_step_on_augmented_data_ends_finite():
    settings = recipe_settings("deit", 8, precision="mixed_bfloat16", random_subnets=0)
    trainer = SandwichTrainer(TINY, settings, steps_per_epoch=2, strategy=tf.distribute.get_strategy())
    assert trainer.supernet.blocks[0].qkv.compute_dtype == "bfloat16"
    assert trainer.supernet.blocks[0].ln1.compute_dtype == "float32"
    digits = load_digits(16)
    data = type(digits)("digits4", 4, 16, digits.train.filter(lambda x, y: y < 4), digits.val,
                        400, 100, flip=False)
    rng = random.Random(0)
    losses = [float(trainer.train_step(images, soft, trainer.subnets_for_step(rng)))
              for images, soft in data.train_batches(8, 0, recipe=settings).take(3)]
    assert all(np.isfinite(losses)) and losses[0] > 0
    assert all(np.all(np.isfinite(v.numpy())) for v in trainer.supernet.trainable_variables)
    assert trainer.supernet.trainable_variables[0].dtype == tf.float32
