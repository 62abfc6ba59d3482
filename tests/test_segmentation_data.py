"""Segmentation datasets (issue 25, data): folders of images/ + masks/, digits-seg, tfds
segmentation sets, and the (images, masks, pixel_weights) pipeline with joint augmentation.

No network: folders are written with PIL into tmp_path, tfds runs on its mock data.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnbuilder.data import load_dataset, make_pipeline
from cnnbuilder.errors import DataError
from test_data import mocked_tfds, write_tfds_metadata

RNG = np.random.default_rng(0)


def label_of(image: np.ndarray) -> np.ndarray:
    """The mask of a generated RGB image: class 1 where its red channel is bright."""
    return (image[..., 0] >= 128).astype(np.uint8)


def make_folder(root, count=6, size=(8, 12), split=None):
    """A label-map segmentation folder with `count` pairs whose masks follow `label_of`,
    pixel (0, 0) void (255). Returns the list of (image, mask) arrays written."""
    images_dir, masks_dir = root / "images", root / "masks"
    if split:
        images_dir, masks_dir = images_dir / split, masks_dir / split
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nred\n")
    written = []
    for i in range(count):
        image = RNG.integers(1, 256, (*size, 3), dtype=np.uint8)
        mask = label_of(image)
        mask[0, 0] = 255
        Image.fromarray(image).save(images_dir / f"{split or ''}{i}.png")
        Image.fromarray(mask).save(masks_dir / f"{split or ''}{i}.png")
        written.append((image, mask))
    return written


def pairs(split):
    """All (image, mask) examples of a streamed split as NumPy."""
    return [(x.numpy(), m.numpy()) for x, m in split]


# ----------------------------------------------------------------------------- folders


def test_segmentation_folder_loads_pairs_matched_by_stem(tmp_path):
    written = make_folder(tmp_path, count=10)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.task == "segmentation" and ds.ignore_label == 255 and ds.palette is None
    assert ds.class_names == ["background", "red"]
    assert ds.image_shape == (8, 12, 3)
    assert sum(ds.sizes.values()) == 10
    seen = pairs(ds.train) + pairs(ds.validation) + pairs(ds.test)
    assert len(seen) == 10
    for image, mask in seen:
        assert mask.dtype == np.uint8 and mask.shape == (8, 12)
        expected = label_of(image)
        expected[0, 0] = 255
        np.testing.assert_array_equal(mask, expected)
    # Every written image came back exactly once.
    assert sorted(i.tobytes() for i, _ in seen) == sorted(i.tobytes() for i, _ in written)


def test_classification_folders_and_digits_stay_classification(tmp_path):
    assert load_dataset("digits").task == "classification"


def test_segmentation_folder_with_its_own_splits(tmp_path):
    make_folder(tmp_path, count=5, split="train")
    make_folder(tmp_path, count=2, split="val")
    make_folder(tmp_path, count=3, split="test")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.sizes == {"train": 5, "validation": 2, "test": 3}


def test_palette_masks_map_colours_and_void(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.csv").write_text("name,r,g,b\nsky,0,0,255\nroad,128,64,128\n"
                                          "Void,0,0,0\ncar,64,0,128\n")
    colours = np.array([[0, 0, 255], [128, 64, 128], [0, 0, 0], [64, 0, 128]], np.uint8)
    expected_labels = np.array([0, 1, 255, 2], np.uint8)
    expected = []
    for i in range(4):
        index = RNG.integers(0, 4, (6, 7))
        Image.fromarray(RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{i}.jpg")
        Image.fromarray(colours[index]).save(tmp_path / "masks" / f"{i}.png")
        expected.append(expected_labels[index])
    ds = load_dataset(f"folder:{tmp_path}", validation_split=0.0, test_split=0.25)
    assert ds.class_names == ["sky", "road", "car"]
    assert ds.palette == ((0, 0, 255), (128, 64, 128), (64, 0, 128))
    got = [m for _, m in pairs(ds.train) + pairs(ds.test)]
    assert sorted(m.tobytes() for m in got) == sorted(m.tobytes() for m in expected)


def _error(tmp_path, match):
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"folder:{tmp_path}")
    return str(info.value)


def test_image_without_mask_is_named(tmp_path):
    make_folder(tmp_path, count=3)
    (tmp_path / "masks" / "1.png").unlink()
    message = _error(tmp_path, "without a mask")
    assert str(tmp_path / "images" / "1.png") in message


def test_mask_without_image_is_named(tmp_path):
    make_folder(tmp_path, count=3)
    (tmp_path / "images" / "2.png").unlink()
    message = _error(tmp_path, "without an image")
    assert str(tmp_path / "masks" / "2.png") in message


def test_mask_of_another_size_is_named(tmp_path):
    make_folder(tmp_path, count=3)
    Image.fromarray(np.zeros((8, 11), np.uint8)).save(tmp_path / "masks" / "0.png")
    message = _error(tmp_path, "11x8")
    assert str(tmp_path / "masks" / "0.png") in message and "12x8" in message


def test_label_out_of_range_is_named(tmp_path):
    make_folder(tmp_path, count=3)
    mask = np.zeros((8, 12), np.uint8)
    mask[2, 3] = 7
    Image.fromarray(mask).save(tmp_path / "masks" / "1.png")
    message = _error(tmp_path, "label 7 out of range")
    assert str(tmp_path / "masks" / "1.png") in message


def test_bad_pairs_can_be_skipped_and_are_listed(tmp_path):
    make_folder(tmp_path, count=6)
    (tmp_path / "masks" / "1.png").unlink()
    ds = load_dataset(f"folder:{tmp_path}", skip_bad_images=True)
    assert ds.skipped == (str(tmp_path / "images" / "1.png"),)
    assert sum(ds.sizes.values()) == 5


def test_corrupt_mask_is_named(tmp_path):
    make_folder(tmp_path, count=3)
    (tmp_path / "masks" / "2.png").write_bytes(b"not a png")
    message = _error(tmp_path, "Cannot read the mask")
    assert str(tmp_path / "masks" / "2.png") in message


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("sky,0,0,255\nroad,1,2,3\nsky,9,9,9\n", r"classes.csv, line 3: class 'sky' again.*two "
                                                r"colours to one class"),
        ("sky,0,0,255\nroad,0,0,255\n", r"classes.csv, line 2: colour \(0, 0, 255\)"),
        ("sky,0,0,255\nroad,0,0\n", r"classes.csv, line 2: .* is not a 'name,r,g,b' row"),
        ("sky,0,0,256\nroad,1,1,1\n", r"classes.csv, line 1: colour"),
    ],
)
def test_bad_palette_names_file_and_line(tmp_path, csv, match):
    make_folder(tmp_path, count=2)
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "classes.csv").write_text(csv)
    _error(tmp_path, match)


def test_colour_outside_the_palette_is_named(tmp_path):
    make_folder(tmp_path, count=2)
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "classes.csv").write_text("sky,0,0,255\nroad,1,2,3\n")
    for i in range(2):
        Image.fromarray(np.full((8, 12, 3), [0, 0, 255], np.uint8)).save(
            tmp_path / "masks" / f"{i}.png")
    mask = np.full((8, 12, 3), [0, 0, 255], np.uint8)
    mask[4, 4] = [9, 9, 9]
    Image.fromarray(mask).save(tmp_path / "masks" / "1.png")
    message = _error(tmp_path, r"colour \(9, 9, 9\)")
    assert str(tmp_path / "masks" / "1.png") in message


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("none", "no classes.txt"),
        ("blank", r"classes.txt, line 2: blank line"),
        ("repeat", r"classes.txt, line 2: class 'background' again"),
        ("one", "at least two"),
        ("colour", "is a RGB colour image"),
    ],
)
def test_bad_class_lists_and_label_maps(tmp_path, setup, match):
    make_folder(tmp_path, count=2)
    classes = tmp_path / "classes.txt"
    if setup == "none":
        classes.unlink()
    elif setup == "blank":
        classes.write_text("background\n\nred\n")
    elif setup == "repeat":
        classes.write_text("background\nbackground\n")
    elif setup == "one":
        classes.write_text("background\n")
    else:
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "masks" / "0.png")
    _error(tmp_path, match)


# --------------------------------------------------------------------------- digits-seg


def test_digits_seg_labels_follow_the_digits():
    digits, seg = load_dataset("digits"), load_dataset("digits-seg")
    assert seg.task == "segmentation" and seg.num_classes == 11 and seg.ignore_label is None
    assert seg.class_names == ["background"] + [str(i) for i in range(10)]
    assert seg.sizes == digits.sizes
    for (x, y), (sx, masks) in ((digits.train, seg.train), (digits.test, seg.test)):
        np.testing.assert_array_equal(sx, x)  # the same images, the same fixed split
        assert masks.shape == x.shape[:3]
        # Each pixel is background or its own digit's class, the class where ink is.
        np.testing.assert_array_equal(masks, np.where(x[..., 0] >= 128, (y + 1)[:, None, None], 0))
        assert (masks.reshape(len(y), -1).max(axis=1) == y + 1).all()  # every digit has ink


# ----------------------------------------------------------------------------- pipeline


def striped(count=16, size=16):
    """Grey images whose pixel value codes the mask: label k -> grey 60 + 80k (no 0s),
    with label 255 (void) at one corner pixel."""
    masks = RNG.integers(0, 3, (count, size, size)).astype(np.uint8)
    images = (60 + 80 * masks).astype(np.uint8)[..., None]
    masks[:, 0, 0] = 255
    return images, masks


def test_pipeline_yields_images_masks_and_pixel_weights():
    images, masks = striped(count=5)
    pipeline = make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=4,
                             training=False, ignore_label=255, class_weights=[1.0, 2.0, 0.5])
    (x, m, w), (x2, m2, w2) = list(pipeline)
    assert x.dtype == tf.float32 and x.shape == (4, 16, 16, 1)
    assert m.dtype == tf.int32 and m.shape == (4, 16, 16)
    assert w.dtype == tf.float32 and w.shape == (4, 16, 16)
    x, m, w = (np.concatenate(a) for a in ((x, x2), (m, m2), (w, w2)))
    np.testing.assert_allclose(x, images / 255.0, atol=1e-6)  # preprocess, unit mode
    void = masks == 255
    assert (w[void] == 0).all() and (m[void] == 0).all()
    np.testing.assert_array_equal(m[~void], masks[~void])
    np.testing.assert_allclose(w[~void], np.array([1.0, 2.0, 0.5])[masks[~void]])


def test_keras_loss_with_pixel_weights_ignores_void_pixels():
    images, masks = striped(count=2, size=4)
    x, m, w = next(iter(make_pipeline((images, masks), input_shape=(4, 4, 1), batch_size=2,
                                      training=False, ignore_label=255)))
    probs = tf.nn.softmax(tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2)))
    loss = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    per_pixel = tf.keras.losses.sparse_categorical_crossentropy(m, probs).numpy()
    keep = masks != 255
    assert np.isclose(float(loss(m, probs, sample_weight=w)), per_pixel[keep].sum(), rtol=1e-5)


def test_masks_are_resized_with_nearest_neighbour():
    images, masks = striped(count=2, size=8)
    _, m, w = next(iter(make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=2,
                                      training=False, ignore_label=255)))
    up = masks.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(m.numpy(), np.where(up == 255, 0, up))
    np.testing.assert_array_equal(w.numpy(), (up != 255).astype(np.float32))


@pytest.mark.parametrize("augment", [["crop", "flip"], ["translate"], ["flip"],
                                     [{"random_erasing": {"p": 1.0}}]])
def test_joint_augmentation_keeps_masks_aligned(augment):
    images, masks = striped(count=16)
    plain = make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=8,
                          training=True, epochs=(0, 1), ignore_label=255)
    moved = make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=8,
                          training=True, epochs=(0, 1), ignore_label=255, augment=augment)
    changed = False
    for (x0, m0, _), (x, m, w) in zip(plain, moved):
        x, m, w = x.numpy()[..., 0], m.numpy(), w.numpy()
        grey = np.round(x * 255)
        if isinstance(augment[0], dict):
            # Photometric: the image changes, the mask and weights must not.
            changed |= not np.array_equal(x, x0.numpy()[..., 0])
            np.testing.assert_array_equal(m, m0.numpy())
            continue
        changed |= not np.array_equal(m, m0.numpy())
        padding = grey == 0  # crops and shifts bring in black pixels: ignored
        labelled = (w > 0) & ~padding
        np.testing.assert_array_equal(m[labelled], (grey[labelled] - 60) / 80)
        assert (w[padding] == 0).all()
    assert changed  # the augmentation did something


@pytest.mark.parametrize("name", ["mixup", "cutmix", "randaugment"])
def test_augmentations_that_break_masks_are_refused(name):
    images, masks = striped(count=4)
    entry = {name: {"alpha": 0.2, "classes": 3}} if name != "randaugment" else name
    with pytest.raises(DataError, match="cannot be used on a segmentation dataset"):
        make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=2, training=True,
                      augment=[entry])


def test_resumed_epochs_replay_the_same_segmentation_batches():
    images, masks = striped(count=12)
    options = dict(input_shape=(16, 16, 1), batch_size=4, training=True, ignore_label=255,
                   augment=["crop", "flip"])
    whole = list(make_pipeline((images, masks), epochs=(0, 2), **options))
    resumed = list(make_pipeline((images, masks), epochs=(1, 2), **options))
    assert len(whole) == 6 and len(resumed) == 3
    for a, b in zip(whole[3:], resumed):
        for part_a, part_b in zip(a, b):
            np.testing.assert_array_equal(part_a.numpy(), part_b.numpy())


def test_sharded_segmentation_batches_split_every_part():
    images, masks = striped(count=8)
    full = next(iter(make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=8,
                                   training=False, ignore_label=255)))
    half = next(iter(make_pipeline((images, masks), input_shape=(16, 16, 1), batch_size=8,
                                   training=False, ignore_label=255, shard=(1, 2, 1))))
    for whole, part in zip(full, half):
        np.testing.assert_array_equal(part.numpy(), whole.numpy()[4:])


def test_folder_pipeline_streams_files_and_keeps_pairs_together(tmp_path):
    make_folder(tmp_path, count=8, size=(8, 8))
    ds = load_dataset(f"folder:{tmp_path}", validation_split=0.0, test_split=0.25)
    pipeline = make_pipeline(ds.train, input_shape=(8, 8, 3), batch_size=3, training=True,
                             epochs=(0, 1), augment=["flip"], ignore_label=ds.ignore_label)
    total = 0
    for x, m, w in pipeline:
        x, m, w = x.numpy(), m.numpy(), w.numpy()
        total += len(x)
        red = np.round(x[..., 0] * 255) >= 128
        keep = w > 0
        np.testing.assert_array_equal(m[keep], red[keep].astype(np.int32))
        assert (w == 0).sum() == len(x)  # exactly the one void pixel per image
    assert total == 6


def test_ignore_label_and_class_weights_are_for_segmentation_only():
    x = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(DataError, match="segmentation"):
        make_pipeline((x, np.zeros(4, np.int64)), input_shape=(8, 8, 1), batch_size=2,
                      training=False, ignore_label=255)
    with pytest.raises(DataError, match="class_weights"):
        make_pipeline((x, np.zeros((4, 8, 8), np.uint8)), input_shape=(8, 8, 1), batch_size=2,
                      training=False, class_weights=[1, -1])


# -------------------------------------------------------------------------------- tfds


def test_tfds_oxford_pet_trimaps_map_to_three_classes(tmp_path):
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, "oxford_iiit_pet", {"train": 3680, "test": 3669})
    with mocked_tfds(tmp_path, num_examples=4):
        ds = load_dataset("tfds:oxford_iiit_pet", data_dir=tmp_path)
        assert ds.task == "segmentation" and ds.ignore_label == 255
        assert ds.class_names == ["pet", "background", "border"]
        assert ds.image_shape == (None, None, 3)
        raw = tfds.builder("oxford_iiit_pet", data_dir=str(tmp_path)).as_dataset(
            split="test", shuffle_files=False)
        for (image, mask), example in zip(ds.test, raw):
            stored = example["segmentation_mask"].numpy()[..., 0].astype(int)
            expected = np.where((stored >= 1) & (stored <= 3), stored - 1, 255)
            np.testing.assert_array_equal(mask.numpy(), expected)
            np.testing.assert_array_equal(image.numpy(), example["image"].numpy())
        pipeline = make_pipeline(ds.train, input_shape=(24, 24, 3), batch_size=2,
                                 training=True, epochs=(0, 1), augment=["flip"],
                                 ignore_label=ds.ignore_label)
        for x, m, w in pipeline:
            assert x.shape[1:] == (24, 24, 3) and m.shape[1:] == (24, 24)
            assert m.numpy().max() <= 2
            assert set(np.unique(w.numpy())) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("corrupt_image", r"images/1.png: not an image"),
        ("jpeg_mask", r"masks/1.jpg: a mask that is not a PNG"),
        ("no_train", r"has split folders \(test\) but no train/"),
        ("loose", r"everything must be inside them, but .*images/stray.png"),
    ],
)
def test_bad_folder_layouts_name_the_file(tmp_path, setup, match):
    if setup in ("no_train", "loose"):
        make_folder(tmp_path, count=2, split="test" if setup == "no_train" else "train")
        if setup == "loose":
            Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "images" / "stray.png")
    else:
        make_folder(tmp_path, count=3)
    if setup == "corrupt_image":
        (tmp_path / "images" / "1.png").write_bytes(b"\x00" * 50)
    elif setup == "jpeg_mask":
        (tmp_path / "masks" / "1.png").rename(tmp_path / "masks" / "1.jpg")
    _error(tmp_path, match)


# ------------------------------------------------------------------------------ arrays


def test_numpy_masks_make_a_segmentation_dataset():
    images, masks = striped(count=20, size=8)
    ds = load_dataset((images, masks), ignore_label=255, validation_split=0.1, test_split=0.2)
    assert ds.task == "segmentation" and ds.ignore_label == 255
    assert ds.class_names == ["0", "1", "2"]
    assert ds.sizes == {"train": 14, "validation": 2, "test": 4}
    for x, m in (ds.train, ds.validation, ds.test):
        # The masks stay with their images through the split (pixel value codes the label).
        assert (m[:, 0, 0] == 255).all()
        np.testing.assert_array_equal(m[:, 1:, 1:], ((x[..., 0].astype(int) - 60) // 80)[:, 1:, 1:])


@pytest.mark.parametrize(
    ("masks", "kwargs", "match"),
    [
        (np.full((4, 8, 8), 255, np.uint8), dict(class_names=["a", "b"]), "label 255, out of range"),
        (np.zeros((4, 8, 7), np.uint8), {}, "expected integer label maps of shape"),
        (np.zeros((4, 8, 8), np.float32), {}, "expected integer label maps"),
    ],
)
def test_bad_numpy_masks_are_refused(masks, kwargs, match):
    with pytest.raises(DataError, match=match):
        load_dataset((np.zeros((4, 8, 8, 1), np.uint8), masks), **kwargs)


def test_ignore_label_is_refused_for_classification_and_named_sets():
    with pytest.raises(DataError, match="ignore_label"):
        load_dataset("digits", ignore_label=255)
    with pytest.raises(DataError, match="ignore_label"):
        load_dataset((np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int64)), ignore_label=255)
