"""Data loaders on real bytes: the bundled digits, and small image folders and CIFAR batches."""
import pickle

import numpy as np
import pytest
from PIL import Image

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.data import load_data


def test_digits_split_is_fixed_and_scaled():
    data = load_data("digits", 32)
    assert (data.train_count, data.search_count, data.val_count, data.num_classes) == (1198, 239, 360, 10)
    images, labels = next(iter(data.val_batches(360)))
    assert images.shape == (360, 32, 32, 3)
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    assert np.bincount(labels.numpy()).min() >= 35  # stratified
    again, labels_again = next(iter(load_data("digits", 32).val_batches(360)))
    np.testing.assert_array_equal(images.numpy(), again.numpy())
    train_images, _ = next(iter(data.train_batches(16, seed=0)))
    assert train_images.shape == (16, 32, 32, 3)


def test_search_split_is_held_out_of_training():
    """The tuner's search split: a sixth of the 1,437 digits training images, none of them in the
    training split, every class in it, the same images on every load."""
    data = load_data("digits", 32)
    def images(dataset):
        return {x.tobytes() for x, _ in dataset.as_numpy_iterator()}

    search, train = images(data.search), images(data.train)
    assert (len(search), len(train)) == (239, 1198) and not search & train
    batch_images, labels = next(iter(data.search_batches(512, image_size=16)))
    assert batch_images.shape == (239, 16, 16, 3) and np.bincount(labels.numpy()).min() >= 15
    assert search == images(load_data("digits", 32).search)


def _write_image_folder(root, classes, per_class):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")


def test_imagefolder(tmp_path):
    _write_image_folder(tmp_path, ["cat", "dog", "eel"], per_class=4)
    data = load_data(f"imagefolder:{tmp_path}", 16)
    assert (data.num_classes, data.train_count, data.search_count, data.val_count) == (3, 10, 2, 12)
    images, labels = next(iter(data.val_batches(12)))
    assert images.shape == (12, 16, 16, 3)
    assert sorted(labels.numpy().tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    order = [int(y) for _, y in data.train.concatenate(data.search).as_numpy_iterator()]
    assert sorted(order) == [0] * 4 + [1] * 4 + [2] * 4 and order != sorted(order)  # not class by class


def test_imagefolder_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(McuformerError, match="no val/ folder"):
        load_data(f"imagefolder:{tmp_path}", 16)
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(McuformerError, match="different class folders"):
        load_data(f"imagefolder:{tmp_path}", 16)


def _write_cifar(root, per_batch, names):
    rng = np.random.default_rng(1)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle)


def test_cifar10(tmp_path):
    _write_cifar(tmp_path, 6, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    data = load_data(f"cifar10:{tmp_path}", 32)
    assert (data.train_count, data.search_count, data.val_count, data.num_classes) == (25, 5, 6, 10)
    images, _ = next(iter(data.val_batches(6)))
    with open(tmp_path / "test_batch", "rb") as handle:
        raw = pickle.load(handle)[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_allclose(images.numpy()[0], raw / 255.0, atol=1e-6)  # channel order kept


def test_cifar10_errors(tmp_path):
    _write_cifar(tmp_path, 2, ["data_batch_1"])
    with pytest.raises(McuformerError, match="missing data_batch_2"):
        load_data(f"cifar10:{tmp_path}", 32)
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(b"not a pickle")
    with pytest.raises(McuformerError, match="data_batch_2 is not a CIFAR-10 python batch"):
        load_data(f"cifar10:{tmp_path}", 32)
