"""Tests of cnnbuilder.data: dataset specs, splits, and the tf.data input pipeline.

The conversion to model input itself (`preprocess`) is tested in test_preprocess.py.

No network: tfds is exercised with `tfds.testing.mock_data` over metadata written to a
temporary data_dir, folders with images written by PIL into tmp_path.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from cnnbuilder.data import Dataset, load_dataset, make_pipeline, preprocess, split_size
from cnnbuilder.data.augment import AUGMENTATIONS
from cnnbuilder.errors import DataError


def batches(pipeline):
    """All (images, labels) of a pipeline as two NumPy arrays."""
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in pipeline))
    return np.concatenate(xs), np.concatenate(ys)


def first_batch(pipeline):
    x, y = next(iter(pipeline))
    return x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


# ---------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_names(digits):
    assert digits.name == "digits"
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.num_classes == 10
    assert digits.image_shape == (32, 32, 1)
    for x, y in (digits.train, digits.validation, digits.test):
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 1)
        assert np.issubdtype(y.dtype, np.integer) and len(y) == len(x)
    assert sum(len(y) for _, y in (digits.train, digits.validation, digits.test)) == 1797
    assert digits.sizes == {"train": 1257, "validation": 180, "test": 360}
    # Values 0..16 are stretched to the full uint8 range.
    assert digits.train[0].min() == 0 and digits.train[0].max() == 255


def test_digits_are_the_real_sklearn_digits_upscaled(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    # The documented transform: 0..16 -> 0..255, bilinear 8x8 -> 32x32, rounded.
    upscaled = tf.image.resize(raw.images[..., None] * (255 / 16), (32, 32)).numpy()
    expected = np.clip(np.round(upscaled), 0, 255).astype(np.uint8)
    label_of = {image.tobytes(): label for image, label in zip(expected, raw.target)}
    for x, y in (digits.train, digits.validation, digits.test):
        assert [label_of[image.tobytes()] for image in x] == y.tolist()
    # The test split is pinned: sklearn's stratified 20% with random_state=0, in order.
    from sklearn.model_selection import train_test_split

    _, test_index = train_test_split(
        np.arange(1797), test_size=0.2, stratify=raw.target, random_state=0
    )
    assert np.array_equal(digits.test[0], expected[np.sort(test_index)])


def test_digits_split_is_stratified(digits):
    everything = np.concatenate([y for _, y in (digits.train, digits.validation, digits.test)])
    overall = np.bincount(everything, minlength=10) / len(everything)
    for _, y in (digits.train, digits.validation, digits.test):
        counts = np.bincount(y, minlength=10)
        assert np.all(counts > 0)
        assert np.all(np.abs(counts - overall * len(y)) <= 1.5), counts


def test_digits_split_is_fixed_and_independent_of_seed(digits):
    again = load_dataset("digits", seed=1234)
    for (x1, y1), (x2, y2) in zip(
        (digits.train, digits.validation, digits.test), (again.train, again.validation, again.test)
    ):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


# -------------------------------------------------------------------------- pipeline


def test_eval_pipeline_converts_scales_adapts_channels_and_resizes(digits):
    pipeline = make_pipeline(digits.test, input_shape=(40, 40, 3), batch_size=64, training=False)
    x, y = batches(pipeline)
    assert pipeline.element_spec[0].dtype == tf.float32
    assert x.shape == (360, 40, 40, 3)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])
    assert np.array_equal(y, digits.test[1])  # ordered, nothing dropped
    assert [int(b[0].shape[0]) for b in pipeline][-1] == 360 % 64


def test_eval_pipeline_is_preprocess(digits):
    x, _ = first_batch(
        make_pipeline(digits.test, input_shape=(40, 40, 3), batch_size=16, training=False)
    )
    expected = preprocess(digits.test[0][:16], (40, 40, 3)).numpy()
    assert np.array_equal(x, expected)


@pytest.mark.parametrize("normalization", ["tf", "torch", "caffe", "dataset"])
def test_pipeline_normalizes_after_augmenting(digits, normalization):
    # The dataset mode's training-split statistics (any positive values do here).
    stats = {"mean": [0.2, 0.3, 0.4], "std": [0.3, 0.2, 0.1]} if normalization == "dataset" else {}

    def first(augment, mode):
        return first_batch(make_pipeline(
            digits.train, input_shape=(32, 32, 3), batch_size=32, training=True,
            augment=augment, seed=1, normalization=mode, **(stats if mode == normalization else {}),
        ))[0]

    evaluation, _ = first_batch(make_pipeline(
        digits.test, input_shape=(32, 32, 3), batch_size=16, training=False,
        normalization=normalization, **stats,
    ))
    assert np.array_equal(
        evaluation, preprocess(digits.test[0][:16], (32, 32, 3), normalization=normalization,
                               **stats)
    )
    # Augmented in [0, 1] (zero padding is black), then normalized like preprocess does.
    unit = first(["crop"], "unit")
    black = preprocess(np.zeros((1, 1, 3), np.uint8), (1, 1, 3), normalization=normalization,
                       **stats)
    white = preprocess(np.full((1, 1, 3), 255, np.uint8), (1, 1, 3), normalization=normalization,
                       **stats)
    expected = black.numpy() + unit * (white.numpy() - black.numpy())
    np.testing.assert_allclose(first(["crop"], normalization), expected, rtol=1e-5, atol=1e-4)


def test_pipeline_refuses_an_unknown_normalization(digits):
    with pytest.raises(DataError, match="normalization"):
        make_pipeline(digits.test, input_shape=(32, 32, 3), batch_size=8, training=False,
                      normalization="imagenet")


def test_training_pipeline_shuffles_deterministically_by_seed(digits):
    def labels(seed):
        pipeline = make_pipeline(
            digits.train, input_shape=(32, 32, 1), batch_size=256, training=True, seed=seed
        )
        return batches(pipeline)[1]

    first, same, other = labels(7), labels(7), labels(8)
    assert np.array_equal(np.sort(first), np.sort(digits.train[1]))  # a permutation
    assert not np.array_equal(first, digits.train[1])
    assert np.array_equal(first, same)
    assert not np.array_equal(first, other)


def test_training_pipeline_reshuffles_each_epoch(digits):
    pipeline = make_pipeline(
        digits.train, input_shape=(32, 32, 1), batch_size=2000, training=True, seed=3
    )
    epoch1, epoch2 = (first_batch(pipeline)[1] for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)


def test_training_pipeline_augments_deterministically(digits):
    def first(augment, seed=5):
        return first_batch(
            make_pipeline(
                digits.train, input_shape=(32, 32, 3), batch_size=64, training=True,
                augment=augment, seed=seed,
            )
        )

    plain_x, plain_y = first(None)
    aug_x, aug_y = first(["crop", "flip"])
    again_x, _ = first(["crop", "flip"])
    assert aug_x.shape == plain_x.shape and aug_x.dtype == np.float32
    assert np.array_equal(aug_y, plain_y)  # augmentation does not change the order
    assert not np.array_equal(aug_x, plain_x)
    assert np.array_equal(aug_x, again_x)


def test_augmentation_depends_on_the_seed():
    x = np.repeat(noise_split(n=1)[0], 16, axis=0)  # one image: the shuffle cannot matter
    y = np.zeros(16, np.int64)

    def augmented(seed):
        return first_batch(make_pipeline((x, y), input_shape=(12, 12, 3), batch_size=16,
                                         training=True, augment="crop", seed=seed))[0]

    assert np.array_equal(augmented(1), augmented(1))
    assert not np.array_equal(augmented(1), augmented(2))


def test_augment_is_ignored_when_not_training(digits):
    kwargs = dict(input_shape=(32, 32, 1), batch_size=32, training=False)
    plain = first_batch(make_pipeline(digits.test, **kwargs))[0]
    augmented = first_batch(make_pipeline(digits.test, augment="crop", **kwargs))[0]
    assert np.array_equal(plain, augmented)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved by (dy, dx) pixels with zero fill."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def noise_split(n=32, size=12, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 256, (n, size, size, channels), dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64) % 4


@pytest.mark.parametrize(("name", "max_shift"), [("crop", 4), ("translate", 2)])
def test_shift_augmentations_move_each_image_by_at_most_their_padding(name, max_shift):
    x, y = noise_split()
    out, _ = batches(
        make_pipeline((x, y), input_shape=(12, 12, 3), batch_size=32, training=True,
                      augment=name, seed=1)
    )
    originals = {i: x[i] / np.float32(255) for i in range(len(x))}
    found_shifts = set()
    for image in out:
        matches = [
            (i, dy, dx)
            for i, original in originals.items()
            for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)
            if np.array_equal(shifted(original, dy, dx), image)
        ]
        assert len(matches) == 1, "each output is one input, shifted with zero fill"
        found_shifts.add(matches[0][1:])
    assert len(found_shifts) > 5  # offsets differ from image to image
    assert max(max(abs(dy), abs(dx)) for dy, dx in found_shifts) == max_shift


def test_flip_augmentation_mirrors_some_images_and_keeps_others():
    x, y = noise_split()
    plain, plain_y = batches(make_pipeline((x, y), input_shape=(12, 12, 3), batch_size=32,
                                           training=True, seed=2))
    flipped, flipped_y = batches(make_pipeline((x, y), input_shape=(12, 12, 3), batch_size=32,
                                               training=True, augment="flip", seed=2))
    assert np.array_equal(plain_y, flipped_y)
    same = [np.array_equal(a, b) for a, b in zip(plain, flipped)]
    mirrored = [np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 0 < sum(mirrored) < len(x)


def test_augmentation_names_are_validated(digits):
    from cnnbuilder.recipe.training import AUGMENTATIONS as RECIPE_AUGMENTATIONS

    assert tuple(AUGMENTATIONS) == RECIPE_AUGMENTATIONS  # the recipe's names are the pipeline's
    with pytest.raises(DataError, match="'rotate'.*crop, flip, translate"):
        make_pipeline(digits.train, input_shape=(32, 32, 1), batch_size=8, training=True,
                      augment=["flip", "rotate"])


def test_repeat_goes_past_one_epoch(digits):
    pipeline = make_pipeline(digits.validation, input_shape=(32, 32, 1), batch_size=100,
                             training=True, repeat=True)
    assert sum(1 for _ in pipeline.take(5)) == 5  # one epoch is 2 batches


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_shape=(32, 32), batch_size=8), "input_shape"),
        (dict(input_shape=(32, 32, 0), batch_size=8), "input_shape"),
        (dict(input_shape=(32, 32, 1), batch_size=0), "batch_size"),
    ],
)
def test_pipeline_arguments_are_validated(digits, kwargs, message):
    with pytest.raises(DataError, match=message):
        make_pipeline(digits.train, training=False, **kwargs)


# ------------------------------------------------------------------------------ tfds


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def write_tfds_metadata(data_dir, name, splits: dict[str, int], label_names=None) -> None:
    """Write the metadata files a prepared tfds set has on disk (but no records)."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    if label_names:  # e.g. cifar10 reads its names from the downloaded files
        builder.info.features["label"].names = label_names
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0,
                                    filename_template=None)
                for s, n in splits.items()
            ]
        )
    )
    tf.io.gfile.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)


def mocked_tfds(data_dir, num_examples):
    return tfds.testing.mock_data(
        num_examples=num_examples, data_dir=str(data_dir),
        policy=tfds.testing.MockPolicy.USE_FILES,
    )


def test_tfds_cifar10_loads_in_memory_with_its_class_names(tmp_path):
    write_tfds_metadata(tmp_path, "cifar10", {"train": 50_000, "test": 10_000}, CIFAR10_NAMES)
    with mocked_tfds(tmp_path, num_examples=40):
        ds = load_dataset("tfds:cifar10", data_dir=tmp_path)
    assert ds.name == "tfds:cifar10"
    assert ds.class_names == CIFAR10_NAMES
    assert ds.num_classes == 10
    assert ds.image_shape == (32, 32, 3)
    for x, y in (ds.train, ds.validation, ds.test):
        assert isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
        assert y.shape == (len(x),) and y.max() < 10
    # test comes from the "test" split; validation is 10% carved from train.
    assert ds.sizes == {"train": 36, "validation": 4, "test": 40}
    x, _ = first_batch(make_pipeline(ds.train, input_shape=(32, 32, 3), batch_size=8,
                                     training=True, augment=["crop", "flip"]))
    assert x.shape == (8, 32, 32, 3)


def test_tfds_uses_its_validation_split_when_present(tmp_path):
    write_tfds_metadata(tmp_path, "mnist", {"train": 60, "validation": 10, "test": 10})
    with mocked_tfds(tmp_path, num_examples=12):
        ds = load_dataset("tfds:mnist", data_dir=tmp_path)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.image_shape == (28, 28, 1)
    assert ds.sizes == {"train": 12, "validation": 12, "test": 12}


def test_tfds_large_sets_stay_streamed(tmp_path):
    write_tfds_metadata(tmp_path, "mnist", {"train": 300_000})
    with mocked_tfds(tmp_path, num_examples=10):
        ds = load_dataset("tfds:mnist", data_dir=tmp_path)
        assert all(
            isinstance(s, tf.data.Dataset) for s in (ds.train, ds.validation, ds.test)
        )
        image_spec, label_spec = ds.train.element_spec
        assert image_spec.shape == (28, 28, 1) and image_spec.dtype == tf.uint8
        assert label_spec.dtype.is_integer
        x, y = first_batch(make_pipeline(ds.train, input_shape=(32, 32, 3), batch_size=4,
                                         training=True))
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32 and y.shape == (4,)


def test_tfds_not_on_disk_is_never_downloaded_and_says_where_to_put_it(tmp_path, monkeypatch):
    downloads = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *args, **kwargs: downloads.append(self.name))
    with pytest.raises(DataError) as caught:
        load_dataset("tfds:mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert downloads == []  # the README promises no downloads at run time
    assert "tfds:mnist" in message and "not prepared on disk" in message
    assert "does not download" in message and str(tmp_path) in message
    assert "tfds build mnist" in message and "--data-dir DIR" in message
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_tfds_unknown_name_suggests_close_matches():
    with pytest.raises(DataError, match="cifar1.*Did you mean.*cifar10"):
        load_dataset("tfds:cifar1")


def test_tfds_without_a_name_is_an_error():
    with pytest.raises(DataError, match="names no dataset"):
        load_dataset("tfds:")


# ---------------------------------------------------------------------------- folder


def save(path, array, mode, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path, format=fmt)


@pytest.fixture
def image_folder(tmp_path):
    """Three classes of 5 images each, mixed sizes, modes and formats."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for i in range(5):
        save(root / "cat" / f"{i}.png", rng.integers(0, 256, (10, 12, 3), np.uint8), "RGB")
        save(root / "dog" / f"{i}.jpg", rng.integers(0, 256, (16, 16), np.uint8), "L")
    save(root / "emu" / "a.png", rng.integers(0, 256, (8, 8, 4), np.uint8), "RGBA")
    save(root / "emu" / "b.gif", rng.integers(0, 256, (9, 7, 3), np.uint8), "P")
    save(root / "emu" / "c.bmp", rng.integers(0, 256, (8, 8, 3), np.uint8), "RGB")
    save(root / "emu" / "nested" / "d.JPEG", rng.integers(0, 256, (8, 8, 3), np.uint8), "RGB")
    save(root / "emu" / "e.png", rng.integers(0, 256, (8, 8), np.uint8), "LA")
    (root / "emu" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_folder_loads_classes_splits_and_mixed_images(image_folder):
    ds = load_dataset(f"folder:{image_folder}")
    assert ds.name == f"folder:{image_folder}"
    assert ds.class_names == ["cat", "dog", "emu"]
    assert ds.image_shape == (None, None, 3)  # mixed sizes, some colour
    assert all(isinstance(s, tf.data.Dataset) for s in (ds.train, ds.validation, ds.test))
    sizes = ds.sizes
    assert sum(sizes.values()) == 15 and sizes["test"] == 3 and sizes["validation"] == 2
    labels = np.concatenate(
        [[int(y) for _, y in split] for split in (ds.train, ds.validation, ds.test)]
    )
    assert np.array_equal(np.bincount(labels), [5, 5, 5])
    for image, _ in ds.train:
        assert image.dtype == tf.uint8 and image.shape[-1] == 3
    x, y = batches(make_pipeline(ds.train, input_shape=(24, 24, 3), batch_size=4,
                                 training=True, augment="flip"))
    assert x.shape == (10, 24, 24, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1


def test_folder_split_is_fixed_and_training_order_seeded(image_folder):
    first, second = (load_dataset(f"folder:{image_folder}") for _ in range(2))

    def labels(split, **kwargs):
        return batches(make_pipeline(split, input_shape=(8, 8, 3), batch_size=3, **kwargs))[1]

    assert np.array_equal(labels(first.test, training=False), labels(second.test, training=False))
    eval_order = labels(first.train, training=False)
    shuffled = labels(first.train, training=True, seed=4)
    assert np.array_equal(np.sort(shuffled), np.sort(eval_order))
    assert np.array_equal(shuffled, labels(second.train, training=True, seed=4))
    assert any(
        not np.array_equal(shuffled, labels(first.train, training=True, seed=s))
        for s in range(5, 8)
    )


def test_grey_folder_of_one_size_has_one_channel_and_exact_pixels(tmp_path):
    rng = np.random.default_rng(1)
    pixels = {}
    for cls in ("a", "b"):
        for i, fmt in enumerate(("png", "bmp", "gif", "png", "bmp")):
            array = rng.integers(0, 256, (6, 5), np.uint8)
            save(tmp_path / cls / f"{i}.{fmt}", array, "L")
            pixels[int(array.sum())] = array
    ds = load_dataset(f"folder:{tmp_path}", validation_split=0.0, test_split=0.2)
    assert ds.image_shape == (6, 5, 1)
    assert ds.train.element_spec[0].shape == (6, 5, 1)
    for image, _ in ds.train.concatenate(ds.test):
        image = image.numpy()[..., 0]
        assert np.array_equal(pixels[int(image.sum())], image)  # lossless formats decode exactly
    x, _ = first_batch(make_pipeline(ds.train, input_shape=(6, 5, 1), batch_size=8,
                                     training=False))
    assert x.shape == (8, 6, 5, 1)


def test_folder_missing(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}.*does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_folder_empty(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_without_class_subfolders(tmp_path):
    save(tmp_path / "loose.png", np.zeros((4, 4), np.uint8), "L")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_class_without_images(image_folder):
    (image_folder / "fox").mkdir()
    (image_folder / "fox" / "readme.txt").write_text("todo")
    with pytest.raises(DataError, match=f"{image_folder / 'fox'} holds no images"):
        load_dataset(f"folder:{image_folder}")


# Bad image files, links and loops of folder datasets: test_bad_images.py.


# ---------------------------------------------------------------------------- arrays


def test_arrays_pair_is_converted_and_split():
    rng = np.random.default_rng(0)
    x = rng.random((100, 7, 9)).astype(np.float32)  # NHW floats in [0, 1]
    y = np.repeat(np.arange(4), 25)
    ds = load_dataset((x, y), class_names=["w", "x", "y", "z"])
    assert ds.name == "arrays" and ds.class_names == ["w", "x", "y", "z"]
    assert ds.image_shape == (7, 9, 1)
    assert ds.sizes == {"train": 70, "validation": 10, "test": 20}
    train_x, train_y = ds.train
    assert train_x.dtype == np.uint8 and train_x.shape == (70, 7, 9, 1)
    assert np.array_equal(np.bincount(ds.test[1]), [5, 5, 5, 5])
    index = int(np.flatnonzero(np.all(np.round(x * 255) == train_x[0, ..., 0], axis=(1, 2)))[0])
    assert y[index] == train_y[0]
    # The caller's arrays are split by `seed`; the same seed gives the same split.
    assert np.array_equal(load_dataset((x, y), seed=0).test[0], ds.test[0])
    assert not np.array_equal(load_dataset((x, y), seed=1).test[0], ds.test[0])


def test_arrays_dict_keeps_given_splits():
    x = np.zeros((30, 5, 5, 3), np.uint8)
    y = np.arange(30) % 3
    ds = load_dataset({"train": (x, y), "test": (x[:6], y[:6])})
    assert ds.class_names == ["0", "1", "2"]
    assert ds.sizes == {"train": 27, "validation": 3, "test": 6}
    with_validation = load_dataset({"train": (x, y), "validation": (x[:4], y[:4]),
                                    "test": (x[:6], y[:6])})
    assert with_validation.sizes == {"train": 30, "validation": 4, "test": 6}


GOOD_X = np.zeros((20, 4, 4, 1), np.uint8)
GOOD_Y = np.arange(20) % 2


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ((GOOD_X, GOOD_Y[:5]), {}, "20 images but 5 labels"),
        ((np.zeros((20, 4)), GOOD_Y), {}, r"shape \(20, 4\)"),
        ((np.zeros((20, 4, 4, 5)), GOOD_Y), {}, "C in 1..4"),
        ((np.full((20, 4, 4), 2.0), GOOD_Y), {}, r"floats in \[0, 1\]"),
        ((np.full((20, 4, 4), np.nan), GOOD_Y), {}, "no NaN"),
        ((np.full((20, 4, 4), 300), GOOD_Y), {}, "uint8"),
        ((GOOD_X, np.eye(2)[GOOD_Y]), {}, "one-hot"),
        ((GOOD_X, GOOD_Y - 1), {}, "class ids start at 0"),
        ((GOOD_X, GOOD_Y + 0.5), {}, "integer class ids"),
        ((GOOD_X,), {}, "pair"),
        ({"train": (GOOD_X, GOOD_Y)}, {}, "'train' and 'test'"),
        ({"train": (GOOD_X, GOOD_Y), "test": (GOOD_X, GOOD_Y), "extra": 1}, {}, "keys"),
        ({"train": (GOOD_X, GOOD_Y), "test": (GOOD_X[:, :3], GOOD_Y)}, {}, "different shapes"),
        ((GOOD_X, GOOD_Y), {"class_names": ["only one"]}, "1 names"),
        ((GOOD_X, GOOD_Y), {"validation_split": 0.5, "test_split": 0.5}, "below 1"),
        ((GOOD_X, GOOD_Y), {"test_split": -0.1}, "test_split"),
    ],
)
def test_arrays_are_validated(spec, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec, **kwargs)


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize("spec", ["cifar10", "folder", "imagenet:x", 42, None])
def test_unknown_spec_lists_the_accepted_forms(spec):
    with pytest.raises(DataError) as caught:
        load_dataset(spec)
    message = str(caught.value)
    assert repr(spec) in message
    for form in ("'digits'", "'tfds:NAME'", "'folder:PATH'"):
        assert form in message


def test_class_names_only_for_arrays():
    with pytest.raises(DataError, match="class_names"):
        load_dataset("digits", class_names=["a"])


def test_split_size_of_both_split_kinds(digits):
    assert split_size(digits.test) == 360
    assert split_size(tf.data.Dataset.range(7)) == 7
    assert split_size(tf.data.Dataset.range(7).filter(lambda i: i > 2)) is None


@pytest.mark.parametrize("processes, devices_per_process", [(2, 1), (1, 2), (2, 2)])
def test_sharded_pipelines_split_every_batch_in_order_and_evenly(processes, devices_per_process):
    """Over D devices every process keeps its slice of each batch, the processes' slices
    put together are the single pipeline's batch in its order (augmented alike), each
    device gets b // D rows, and a last batch with fewer rows than devices is dropped."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(37, 8, 8, 3), dtype=np.uint8)
    y = np.arange(37)
    devices = processes * devices_per_process
    common = dict(input_shape=(8, 8, 3), batch_size=12, training=True, augment=["crop", "flip"], seed=3)
    single = [(a.numpy(), b.numpy()) for a, b in make_pipeline((x, y), **common)]
    shards = [list(make_pipeline((x, y), shard=(index, processes, devices_per_process), **common))
              for index in range(processes)]
    # 37 = 3 × 12 + 1: the last batch of one row is dropped when there are several devices.
    assert [len(s) for s in shards] == [3] * processes
    for shard in shards:
        assert int(shard[0][0].shape[0]) == 12 // devices * devices_per_process
        assert make_pipeline((x, y), shard=(0, processes, devices_per_process),
                             **common).cardinality().numpy() == 3
    for step, (images, labels) in enumerate(single[:3]):
        kept = 12 // devices * devices
        joined_images = np.concatenate([shard[step][0].numpy() for shard in shards])
        joined_labels = np.concatenate([shard[step][1].numpy() for shard in shards])
        np.testing.assert_array_equal(joined_labels, labels[:kept])
        np.testing.assert_array_equal(joined_images, images[:kept])


def test_a_streamed_split_draws_its_epoch_order_from_seed_and_epoch_alone():
    """A tf.data split (tfds' large sets) shuffled per epoch: the same order whatever the
    global seed, 0 included (a run with seed 0 sets it: TensorFlow then compared the tensor
    seed with 0 in Python and raised), and another order each epoch."""
    images = np.zeros((10, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(10)
    split = tf.data.Dataset.from_tensor_slices((images, np.arange(10) % 2))
    orders = []
    for global_seed in (0, 5):
        tf.random.set_seed(global_seed)
        batches = make_pipeline(split, input_shape=(8, 8, 3), batch_size=10, training=True,
                                epochs=(0, 2), seed=3)
        orders.append([list(np.round(x.numpy()[:, 0, 0, 0] * 255).astype(int)) for x, _ in batches])
    assert orders[0] == orders[1]
    assert orders[0][0] != orders[0][1] and sorted(orders[0][0]) == list(range(10))
