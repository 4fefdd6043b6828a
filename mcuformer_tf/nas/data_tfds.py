"""`tfds:` data: a TensorFlow Datasets image classification set the user prepared beforehand
(`tfds build NAME --data_dir DIR`, or ImageNet's manual download; nothing downloads here).

Images stay encoded (tfds.decode.SkipDecoding) until `crops` decodes the part it keeps. The
splits are TRAIN,VAL from the spec, else `train` and the first of `validation`, `test` the set has.
"""
from __future__ import annotations

from mcuformer_tf.errors import McuformerError

VAL_SPLITS = ("validation", "test")


def _builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise McuformerError(f"data tfds:{name}: TensorFlow Datasets has no data set {name!r} "
                             "(see `tfds build --help` or the TFDS catalogue for names)") from None
    except (ValueError, KeyError) as err:
        raise McuformerError(f"data tfds:{name}: {str(err).splitlines()[0]}") from None


def _splits(builder, name, splits):
    if splits:
        return splits
    known = list(builder.info.splits)
    if not known:  # not prepared: let as_dataset name the data dir it looked in
        return "train", VAL_SPLITS[0]
    val = next((s for s in VAL_SPLITS if s in known), None)
    if "train" not in known or val is None:
        raise McuformerError(f"data tfds:{name}: has splits {', '.join(known)}; name the two to use "
                             f"as tfds:{name}:TRAIN,VAL")
    return "train", val


def _split(builder, name, split, data_dir):
    import tensorflow_datasets as tfds

    try:
        ds = builder.as_dataset(split=split, as_supervised=True,
                                decoders={"image": tfds.decode.SkipDecoding()})
    except AssertionError:  # TFDS's "could not find data in ..." for an unprepared set
        raise McuformerError(f"data tfds:{name}: not prepared in {data_dir or builder.data_dir} (run "
                             f"`tfds build {name} --data_dir DIR` first and pass --data-dir DIR)") from None
    except (ValueError, KeyError) as err:
        raise McuformerError(f"data tfds:{name}: split {split!r}: {str(err).splitlines()[0]}") from None
    count = int(ds.cardinality())
    if count < 0:
        count = builder.info.splits[split].num_examples
    return ds, count


def load_tfds(name: str, splits: tuple[str, str] | None, data_dir: str | None) -> dict:
    """The splits of a prepared TFDS image classification set (see the module docstring): keyword
    arguments of `data.encoded_image_data` but the image size."""
    builder = _builder(name, data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise McuformerError(f"data tfds:{name}: not an image classification set (needs image "
                             "and label features)")
    train_split, val_split = _splits(builder, name, splits)
    (train, n_train), (val, n_val) = (_split(builder, name, s, data_dir) for s in (train_split, val_split))
    if n_train < 1:
        raise McuformerError(f"data tfds:{name}: split {train_split} is empty")
    return {"name": f"tfds:{name}", "num_classes": features["label"].num_classes, "train": train,
            "val": val, "train_count": n_train, "val_count": n_val}


