"""Segmentation pictures: the class palette masks are drawn and saved with, and a figure
of images beside their true and predicted masks (`segmentation_figure`), which a
segmentation run writes as ``segmentation.png`` beside ``history.png``.

The palette is PASCAL VOC's (the bits of the class index spread over R, G and B, so
neighbouring indices get distinct colours: 0 black, 1 dark red, 2 dark green...), which
also colours the mask PNGs `cnnbuilder predict --output` writes: a mask opened in any
image viewer shows the same colours as the figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["colour_masks", "palette", "segmentation_figure"]

# A palette PNG holds at most 256 colours.
PALETTE_SIZE = 256


def palette(classes: int = PALETTE_SIZE) -> np.ndarray:
    """(classes, 3) uint8 RGB colours of PASCAL VOC's colour map (classes <= 256)."""
    if not 0 < classes <= PALETTE_SIZE:
        raise ValueError(f"a palette has 1 to {PALETTE_SIZE} colours, got {classes}")
    colours = np.zeros((classes, 3), np.uint8)
    for index in range(classes):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


# The colour of ignored (void) pixels, marked by a negative label: white, as VOC's void.
VOID_COLOUR = (255, 255, 255)


def colour_masks(masks, classes: int) -> np.ndarray:
    """Integer masks (..., H, W) as uint8 RGB (..., H, W, 3) in the `palette` colours
    (indices past 255 wrap around; a negative label, an ignored pixel, is `VOID_COLOUR`)."""
    colours = palette(min(max(int(classes), 1), PALETTE_SIZE))
    masks = np.asarray(masks)
    coloured = colours[np.where(masks < 0, 0, masks) % len(colours)]
    coloured[masks < 0] = VOID_COLOUR
    return coloured


def segmentation_figure(images, true_masks, predicted_masks, class_names: Sequence[str], *,
                        max_images: int = 4, title: str = ""):
    """A matplotlib `Figure`: one row per image, columns image, true mask, predicted mask,
    and a legend of the class colours.

    Args:
        images: (N, H, W, C) images, uint8 or float in [0, 1] (C = 1 or 3; other float
            ranges, such as normalized model input, are rescaled per image for display).
        true_masks, predicted_masks: (N, H, W) integer class maps.
        class_names: the K class names (the legend).
        max_images: the first this many images are drawn.
        title: the figure's title.

    Returns:
        The Figure (not shown, no pyplot state); ``figure.savefig(path)`` writes it.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    images = np.asarray(images)[:max_images]
    true_masks = np.asarray(true_masks)[:max_images]
    predicted_masks = np.asarray(predicted_masks)[:max_images]
    if not len(images) == len(true_masks) == len(predicted_masks) or len(images) == 0:
        raise ValueError(
            f"segmentation_figure needs as many images, true and predicted masks (at least "
            f"one), got {len(images)}, {len(true_masks)} and {len(predicted_masks)}")
    classes = len(class_names)
    rows = len(images)
    figure = Figure(figsize=(9, 2.6 * rows + 0.8), constrained_layout=True)
    axes = np.asarray(figure.subplots(rows, 3, squeeze=False))
    for row in range(rows):
        for column, (picture, heading) in enumerate((
                (_displayable(images[row]), "image"),
                (colour_masks(true_masks[row], classes), "true mask"),
                (colour_masks(predicted_masks[row], classes), "predicted mask"))):
            axis = axes[row, column]
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                        interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(heading)
    colours = palette(min(max(classes, 1), 256)) / 255.0
    handles = [Patch(color=colours[i % len(colours)], label=str(name))
               for i, name in enumerate(class_names)]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(classes, 6),
                  fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    return figure


def _displayable(image: np.ndarray) -> np.ndarray:
    """An image imshow can draw: uint8 as it is, floats in [0, 1] as they are, other
    floats rescaled to [0, 1]; one channel as a 2-D grey image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image
