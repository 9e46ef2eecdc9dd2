"""Image preprocessing shared by the energy models: RGB check, resize, centre crop, normalise.

The reference pipelines of both DINOv2 (``dinov2/data/transforms.py``,
``make_classification_eval_transform``) and OpenAI CLIP (``clip/clip.py``,
``_transform``) are torchvision ``Resize(shorter side, BICUBIC)`` ->
``CenterCrop`` -> ``ToTensor`` -> ``Normalize(mean, std)`` applied to PIL images. We
reproduce that chain without torchvision or a downloaded image processor:

- the resize is PIL's own bicubic resize of the 8-bit image (what torchvision calls
  on a PIL input, so the result is bit-identical), with torchvision's size rule
  ``long = int(size * long / short)``;
- the crop offset is torchvision's ``int(round((h - crop) / 2))``;
- ``ToTensor`` + ``Normalize`` are one vectorised operation over the whole batch.

Images may differ in size, so the resize runs per image (PIL's C resampler); every
other step is one tensor operation over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from precompute.errors import DataError
from precompute.images import to_rgb

# ImageNet statistics used by DINOv2 (Oquab et al. 2023, eval transform).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenAI CLIP statistics (Radford et al. 2021, ``clip/clip.py``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: What ``encode`` accepts: a list of PIL images or (H, W, 3) uint8 arrays, or one
#: (B, H, W, 3) uint8 array or tensor.
ImageBatch = Sequence[Image.Image | np.ndarray] | np.ndarray | torch.Tensor


def as_pil_list(images: ImageBatch) -> list[Image.Image]:
    """``images`` as a list of RGB PIL images, or ``DataError`` saying what came instead."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise DataError(
                f"expected a batch of images (B, H, W, 3) or a list of images, got one array of shape {images.shape}; "
                "wrap a single image in a list"
            )
        images = list(images)
    if isinstance(images, (Image.Image, str, bytes)) or not isinstance(images, Sequence):
        raise DataError(f"expected a list of images or a (B, H, W, 3) uint8 array, got {type(images).__name__}")
    if len(images) == 0:
        raise DataError("expected at least one image to encode, got an empty batch")
    return [_as_pil(image, i) for i, image in enumerate(images)]


def _as_pil(image: object, index: int) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(
                f"image {index}: expected a (H, W, 3) uint8 array, got shape {image.shape} of dtype {image.dtype}"
            )
        return Image.fromarray(np.ascontiguousarray(image), "RGB")
    raise DataError(f"image {index}: expected a PIL image or a (H, W, 3) uint8 array, got {type(image).__name__}")


def resize_shorter(image: Image.Image, size: int, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio (torchvision's rule)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, resample=resample)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` window, offsets rounded as torchvision's ``CenterCrop``.

    The image must be at least ``size`` on both sides (``resize_shorter`` first).
    """
    width, height = image.size
    if width < size or height < size:
        raise DataError(f"cannot centre-crop {size}x{size} out of a {width}x{height} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32: ``(x / 255 - mean) / std`` per channel."""
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.sub_(mean_t).div_(std_t)


def resize_crop_normalise(
    images: ImageBatch,
    resize: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
    resample: int = Image.Resampling.BICUBIC,
) -> torch.Tensor:
    """The full eval transform: shorter side to ``resize``, centre ``crop``, normalise.

    Returns (B, 3, crop, crop) float32 on the CPU.
    """
    cropped = [centre_crop(resize_shorter(image, resize, resample), crop) for image in as_pil_list(images)]
    return normalise(np.stack([np.asarray(image) for image in cropped]), mean, std)
