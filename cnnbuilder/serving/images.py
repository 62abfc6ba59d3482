"""Reading an image file for `predict`: the one decoder of `cnnbuilder.data.images`
(EXIF orientation applied), which the training pipeline decodes with too."""

from cnnbuilder.data.images import read_image

__all__ = ["read_image"]
