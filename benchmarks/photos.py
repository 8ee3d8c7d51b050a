"""Real photos offline: crops of scikit-image's bundled pictures.

Random-weight architectures are calibrated and compared on these (real
image statistics), as no labelled RGB data set ships offline.

Example:

>>> crops = photo_crops(4, 32)  # doctest: +SKIP
>>> crops.shape, crops.dtype  # doctest: +SKIP
((4, 32, 32, 3), dtype('float32'))
"""

import numpy as np

__all__ = ["photo_crops"]

_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
)


def photo_crops(count, size, seed=0):
    """``count`` RGB crops of skimage's photos, resized to ``size``.

    Args:
        count: how many crops.
        size: their height and width.
        seed: where the crops are taken. Defaults to 0.

    Returns:
        ``(count, size, size, 3)`` float32 in [0, 255].
    """
    from skimage import data
    from skimage import transform

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in _PHOTOS]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(size // 2 + 1, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top : top + side, left : left + side, :3]
        crops.append(transform.resize(crop, (size, size), order=1) * 255.0)
    return np.stack(crops).astype(np.float32)
