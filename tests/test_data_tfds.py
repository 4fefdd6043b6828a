"""tfds: data on TFDS's own mock data, the random-resized and centre crops of large images, and
one-line errors for a bad name, data dir or split."""
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cli_runner import assert_one_line_error, run_cli
from PIL import Image

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.crops import centre_crop, random_resized_crop
from mcuformer_tf.nas.data import load_data
from mcuformer_tf.nas.data_spec import check_data_spec, parse_tfds_spec
from mcuformer_tf.nas.train_settings import recipe_settings


def test_tfds_mock_data_streams_cropped_batches(tmp_path):
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_data("tfds:cifar10", 24, data_dir=str(tmp_path))
        assert (data.name, data.num_classes, data.train_count, data.search_count, data.val_count) == (
            "tfds:cifar10", 10, 17, 3, 20)
        images, soft = next(iter(data.train_batches(8, seed=0, recipe=recipe_settings("digits", 8))))
        assert images.shape == (8, 24, 24, 3) and soft.shape == (8, 10)
        np.testing.assert_array_equal(soft.numpy().sum(axis=1), 1.0)  # one-hot
        val_images, labels = next(iter(data.val_batches(20)))
        assert val_images.shape == (20, 24, 24, 3) and labels.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(val_images)) and float(tf.reduce_max(val_images)) <= 1.0
        explicit = load_data("tfds:cifar10:train,test", 24, data_dir=str(tmp_path))
        assert explicit.val_count == 20


def test_bad_tfds_name_data_dir_and_splits_are_one_line(tmp_path):
    with pytest.raises(McuformerError, match="has no data set 'no_such_set'"):
        load_data("tfds:no_such_set", 24, data_dir=str(tmp_path))
    with pytest.raises(McuformerError, match=r"not prepared in .*tfds build cifar10"):
        load_data("tfds:cifar10", 24, data_dir=str(tmp_path))
    with pytest.raises(McuformerError, match="--data-dir .*missing: no such directory"):
        check_data_spec("tfds:cifar10", str(tmp_path / "missing"))
    with pytest.raises(McuformerError, match="serves tfds: data only"):
        check_data_spec("digits", str(tmp_path))
    with pytest.raises(McuformerError, match="give a data set name"):
        check_data_spec("tfds:")
    assert parse_tfds_spec("tfds:imagenette/320px-v2") == ("imagenette/320px-v2", None)
    assert parse_tfds_spec("tfds:imagenet2012:5.1.0:train,validation") == (
        "imagenet2012:5.1.0", ("train", "validation"))


def _encoded(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=100)
    return tf.constant(buffer.getvalue())


def test_centre_crop_takes_the_middle_at_the_crop_ratio():
    # 320 x 400 image whose left half is black, right half white: the shorter side goes to
    # ceil(24 / 0.875) = 28, so the 24-wide centre of the 35-wide image straddles the edge evenly.
    pixels = np.zeros((320, 400, 3), np.uint8)
    pixels[:, 200:] = 255
    crop = centre_crop(_encoded(pixels, "PNG"), 24).numpy()
    assert crop.shape == (24, 24, 3)
    assert crop[:, :11].max() < 0.05 and crop[:, 13:].min() > 0.95


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_random_resized_crops_cover_8_to_100_percent(fmt):
    rng = np.random.default_rng(0)
    pixels = (rng.uniform(0, 1, (200, 300, 1)) * np.linspace(0, 255, 300)[None, :, None])
    encoded = _encoded(np.repeat(pixels, 3, axis=2).astype(np.uint8), fmt)
    crops = [random_resized_crop(encoded, 32, [0, i]).numpy() for i in range(20)]
    assert all(c.shape == (32, 32, 3) and 0 <= c.min() and c.max() <= 1 for c in crops)
    assert np.std([c.mean() for c in crops]) > 0.01  # different boxes of a left-to-right ramp
    np.testing.assert_array_equal(crops[3], random_resized_crop(encoded, 32, [0, 3]))


@pytest.mark.parametrize("args, fragment", [
    (["--data", "tfds:no_such_set"], "has no data set 'no_such_set'"),
    (["--data", "tfds:cifar10", "--data-dir", "{tmp}/missing"], "missing: no such directory"),
    (["--data", "tfds:cifar10", "--data-dir", "{tmp}"], "not prepared in"),
    (["--init-from", "{tmp}/deit.pth"], "give a .safetensors or .npz state dict"),
    (["--init-from", "{tmp}/missing.safetensors"], "no such file"),
    (["--strategy", "multi-worker"], "needs TF_CONFIG"),
])
def test_bad_data_init_and_strategy_options_are_one_line_errors(tmp_path, monkeypatch, args, fragment):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = run_cli("train", "--out", tmp_path / "run", *[a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()
