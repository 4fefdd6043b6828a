"""Image classification data for training and evaluating subnets, with no download.

A data spec is one string:
- `digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans),
  upscaled bilinearly to the space's image size, grey copied to RGB, with a
  fixed stratified 80/20 train/val split.
- `imagefolder:PATH`: the ImageNet layout, PATH/train/<class>/*.jpg and
  PATH/val/<class>/*.jpg (any format tf.image decodes).
- `cifar10:PATH`: the CIFAR-10 python batches (data_batch_1..5, test_batch).
- `tfds:NAME[:TRAIN,VAL]`: a TensorFlow Datasets data set already prepared in
  `data_dir` (see `data_tfds`).

Every source's first training examples (a sixth, at most 10,000) are the search split: held
out of training, they are what the tuner scores subnets on, so the val split that `demo`,
`evaluate` and `export` report was neither trained on nor chosen on (as OFA and AutoFormer
search). The training examples are in a random order in every source (imagefolder's files are
put in one, the others come in one), so the first ones are a fair sample.

Images reach the model as float32 in [0, 1], at the requested size. `digits`
and `cifar10:` are small images held in memory, trained with a random shift
and flip; `imagefolder:` and `tfds:` stream encoded images and train on
random-resized crops, evaluating on centre crops (see `crops`).
"""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import tensorflow as tf

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.augmentation import batch_mixer, per_image
from mcuformer_tf.nas.crops import centre_crop, random_resized_crop
from mcuformer_tf.nas.data_spec import check_data_spec, existing_dir, parse_tfds_spec
from mcuformer_tf.nas.train_settings import TrainSettings

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
SEARCH_SHARE = 6  # one training example in this many is in the search split
SEARCH_MAX = 10_000  # ... up to this many


@dataclasses.dataclass
class ImageData:
    """Train, val and search splits of one source, each a tf.data.Dataset of (image, label) at
    image_size (see the module docstring for the search split).

    Where `train_encoded` is given (encoded image bytes, label), training batches are
    random-resized crops of it; `train` is then the centre-cropped view of the same images.
    """

    name: str
    num_classes: int
    image_size: int
    train: tf.data.Dataset
    val: tf.data.Dataset
    train_count: int
    val_count: int
    flip: bool = True
    train_encoded: tf.data.Dataset | None = None
    search: tf.data.Dataset | None = None
    search_count: int = 0

    def _crop(self):
        """(image, seed pair) -> a random shift of a small image, or a random-resized crop of an
        encoded one; the same for the same seed pair, whatever the pipeline's thread order."""
        size, pad = self.image_size, max(1, self.image_size // 16)

        def shift(image, seed):
            image = tf.image.resize_with_crop_or_pad(image, size + 2 * pad, size + 2 * pad)
            return tf.image.stateless_random_crop(image, [size, size, 3], seed=seed)

        return (lambda encoded, seed: random_resized_crop(encoded, size, seed)) if self.encoded else shift

    @property
    def encoded(self) -> bool:
        return self.train_encoded is not None

    def train_batches(self, batch_size: int, seed: int,
                      recipe: TrainSettings | None = None) -> tf.data.Dataset:
        """Shuffled training batches, cropped (see `_crop`), flipped where flips keep the class.

        The crop and flip of the i-th example of the shuffled order draw from the seed pair
        (seed, i), so the same seed gives the same batches on every run and every worker. With a
        `recipe` the labels are one-hot float vectors and its augmentation applies (RandAugment,
        random erasing, mixup/cutmix; see `augmentation`); without, int labels.
        """
        crop, augment = self._crop(), per_image(recipe) if recipe else None
        num_classes = self.num_classes

        def prepare(index, example):
            image, label = example
            pair = tf.stack([tf.constant(seed, tf.int64), index])
            image = crop(image, pair)
            if self.flip:
                image = tf.image.stateless_random_flip_left_right(image, seed=pair + [0, 1 << 40])
            if augment:
                image = augment(image)
            return image, (tf.one_hot(label, num_classes) if recipe else label)

        source = self.train_encoded if self.encoded else self.train
        buffer = min(self.train_count, 10_000 if self.encoded else 20_000)
        batches = (source.shuffle(buffer, seed=seed, reshuffle_each_iteration=False).enumerate()
                   .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
                   .batch(batch_size, drop_remainder=True))
        mix = batch_mixer(recipe) if recipe else None
        if mix:
            batches = batches.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
        return batches.prefetch(tf.data.AUTOTUNE)

    def val_batches(self, batch_size: int, image_size: int | None = None) -> tf.data.Dataset:
        """Val batches, resized to `image_size` when a subnet takes another size."""
        return self._batches(self.val, batch_size, image_size)

    def search_batches(self, batch_size: int, image_size: int | None = None) -> tf.data.Dataset:
        """Search split batches (what the tuner scores on), resized as `val_batches`."""
        if not self.search_count:
            raise McuformerError(f"data {self.name}: its {self.train_count} training images leave no "
                                 f"search split to score subnets on (one in {SEARCH_SHARE} is held out for it)")
        return self._batches(self.search, batch_size, image_size)

    def at_size(self, dataset: tf.data.Dataset, image_size: int | None) -> tf.data.Dataset:
        """`dataset` (images or batches of them, with labels) of this data resized to `image_size`
        where that is given and differs from the data's."""
        if not image_size or image_size == self.image_size:
            return dataset
        return dataset.map(lambda x, y: (tf.image.resize(x, [image_size, image_size]), y))

    def _batches(self, dataset, batch_size, image_size):
        return self.at_size(dataset, image_size).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def hold_out_search(data: ImageData) -> ImageData:
    """`data` with its first training examples (see the module docstring) moved to the search split."""
    count = min(data.train_count // SEARCH_SHARE, SEARCH_MAX)
    encoded = data.train_encoded.skip(count) if data.encoded else None
    return dataclasses.replace(data, train=data.train.skip(count), train_count=data.train_count - count,
                               train_encoded=encoded, search=data.train.take(count), search_count=count)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images.astype(np.float32)
    return tf.image.resize(images.astype(np.float32), [size, size], method="bilinear").numpy()


def _from_arrays(name, x_train, y_train, x_val, y_val, num_classes, image_size, flip):
    def dataset(x, y):
        return tf.data.Dataset.from_tensor_slices((_resize(x, image_size), y.astype(np.int32)))

    return hold_out_search(ImageData(name, num_classes, image_size, dataset(x_train, y_train),
                                     dataset(x_val, y_val), len(y_train), len(y_val), flip))


def load_digits(image_size: int) -> ImageData:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = np.repeat((digits.images / 16.0)[..., None], 3, axis=-1)
    x_train, x_val, y_train, y_val = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    return _from_arrays("digits", x_train, y_train, x_val, y_val, 10, image_size, flip=False)


def load_cifar10(path: str, image_size: int) -> ImageData:
    folder = existing_dir(path, "cifar10")

    def read(batch_name):
        file = folder / batch_name
        if not file.is_file():
            raise McuformerError(f"data cifar10:{path}: missing {batch_name} (expected the "
                                 "CIFAR-10 python batches data_batch_1..5 and test_batch)")
        try:
            with open(file, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[b"labels"], np.int32)
        except Exception as err:  # any unpickling or shape failure means the same thing
            raise McuformerError(f"data cifar10:{path}: {batch_name} is not a CIFAR-10 python "
                                 f"batch ({type(err).__name__})") from None
        return data.transpose(0, 2, 3, 1) / 255.0, labels

    train = [read(name) for name in CIFAR10_TRAIN]
    x_val, y_val = read("test_batch")
    return _from_arrays("cifar10", np.concatenate([x for x, _ in train]),
                        np.concatenate([y for _, y in train]), x_val, y_val, 10, image_size,
                        flip=True)


def _image_files(split_dir: Path, classes: list[str]):
    """The split's files and labels in one fixed random order (not class by class)."""
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(str(f) for f in (split_dir / name).iterdir() if f.is_file())
        files += found
        labels += [label] * len(found)
    order = np.random.default_rng(0).permutation(len(files))
    return [files[i] for i in order], [labels[i] for i in order]


def load_imagefolder(path: str, image_size: int) -> ImageData:
    folder = existing_dir(path, "imagefolder")
    splits = {}
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise McuformerError(f"data imagefolder:{path}: no {split}/ folder (expected "
                                 "PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg)")
        splits[split] = sorted(d.name for d in (folder / split).iterdir() if d.is_dir())
    classes = splits["train"]
    if not classes:
        raise McuformerError(f"data imagefolder:{path}: train/ has no class folders")
    if splits["val"] != classes:
        raise McuformerError(f"data imagefolder:{path}: val/ and train/ have different class "
                             "folders")

    def dataset(split):
        files, labels = _image_files(folder / split, classes)
        if not files:
            raise McuformerError(f"data imagefolder:{path}: {split}/ holds no image files")
        ds = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, np.int32)))
        return ds.map(lambda file, label: (tf.io.read_file(file), label)), len(files)

    (train, n_train), (val, n_val) = dataset("train"), dataset("val")
    return encoded_image_data("imagefolder", len(classes), image_size, train, val, n_train, n_val)


def encoded_image_data(name, num_classes, image_size, train, val, train_count, val_count) -> ImageData:
    """ImageData of (encoded image, int label) splits: random-resized crops to train on, centre
    crops for evaluation."""
    def centre(encoded, label):
        return centre_crop(encoded, image_size), tf.cast(label, tf.int32)

    train = train.map(lambda x, y: (x, tf.cast(y, tf.int32)))
    return hold_out_search(ImageData(name, num_classes, image_size,
                                     train.map(centre, num_parallel_calls=tf.data.AUTOTUNE),
                                     val.map(centre, num_parallel_calls=tf.data.AUTOTUNE), train_count,
                                     val_count, train_encoded=train))


def load_data(spec: str, image_size: int, data_dir: str | None = None) -> ImageData:
    """Load a data spec (see the module docstring) at `image_size`; `data_dir` serves `tfds:`."""
    check_data_spec(spec, data_dir)
    source, _, path = spec.partition(":")
    if source == "tfds":
        from mcuformer_tf.nas.data_tfds import load_tfds

        name, splits = parse_tfds_spec(spec)
        return encoded_image_data(image_size=image_size, **load_tfds(name, splits, data_dir))
    loaders = {"digits": lambda: load_digits(image_size), "cifar10": lambda: load_cifar10(path, image_size),
               "imagefolder": lambda: load_imagefolder(path, image_size)}
    return loaders[source]()
