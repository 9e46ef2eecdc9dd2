"""Preprocessing is the reference eval transform, computed independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.encoders.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_pil_list,
    centre_crop,
    resize_crop_normalise,
    resize_shorter,
)
from precompute.errors import DataError


def _reference(image: np.ndarray, resize: int, crop: int, mean, std) -> np.ndarray:
    """torchvision's Resize(resize, BICUBIC) -> CenterCrop(crop) -> ToTensor -> Normalize, spelled out."""
    h, w = image.shape[:2]
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)).astype(np.float64) / 255.0
    top = int(round((resized.shape[0] - crop) / 2.0))
    left = int(round((resized.shape[1] - crop) / 2.0))
    window = resized[top : top + crop, left : left + crop]
    return ((window - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(320, 480), (301, 257), (224, 224), (600, 250)])
def test_dinov2_transform_matches_the_reference(shape):
    image = np.random.default_rng(shape[0]).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    pixels = resize_crop_normalise([image], 256, 224, IMAGENET_MEAN, IMAGENET_STD)
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == torch.float32
    expected = _reference(image, 256, 224, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(pixels[0].numpy(), expected, atol=1e-5)


def test_clip_transform_matches_transformers_image_processor():
    """An even crop offset, where torchvision's and transformers' rounding agree."""
    from transformers import CLIPImageProcessor

    image = np.random.default_rng(5).integers(0, 256, size=(320, 480, 3), dtype=np.uint8)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    expected = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
    ours = resize_crop_normalise([image], 224, 224, CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(ours, expected.float(), atol=1e-5, rtol=0)


def test_resize_keeps_aspect_with_torchvision_rule_and_crop_rounds_like_torchvision():
    image = Image.new("RGB", (300, 451))
    resized = resize_shorter(image, 256)
    assert resized.size == (256, int(256 * 451 / 300))
    cropped = centre_crop(Image.new("RGB", (227, 230)), 224)
    assert cropped.size == (224, 224)
    with pytest.raises(DataError, match="cannot centre-crop"):
        centre_crop(Image.new("RGB", (100, 300)), 224)


def test_inputs_pil_arrays_batches_and_bad_ones():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    assert len(as_pil_list(rgb)) == 2
    assert len(as_pil_list(torch.from_numpy(rgb))) == 2
    grey = Image.new("L", (8, 8))
    assert as_pil_list([grey])[0].mode == "RGB"
    with pytest.raises(DataError, match="wrap a single image"):
        as_pil_list(rgb[0])
    with pytest.raises(DataError, match="uint8"):
        as_pil_list([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(DataError, match="empty"):
        as_pil_list([])
    with pytest.raises(DataError, match="list of images"):
        as_pil_list("cat.png")
