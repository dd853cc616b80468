"""plots.photo_grid: colour photos with multi-line captions (lesson 05's "use it as is")."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.course import plots


def test_photo_grid_places_every_photo_as_a_jpeg_under_its_caption():
    ramp = torch.linspace(0.1, 0.9, 30)  # smooth, like a photo (JPEG is made for those)
    photos = torch.stack([ramp.expand(3, 20, 30) * (i + 1) / 5 for i in range(5)])
    captions = [f"photo {i}<br>guess a 0.50<br>guess b 0.20" for i in range(5)]
    fig = plots.photo_grid(photos, captions, ncols=3, title="top 3")
    images = [t for t in fig.data if t.type == "image"]
    assert len(images) == 5 and [a.text for a in fig.layout.annotations] == captions
    assert fig.layout.title.text == "top 3"
    header, jpeg = images[0].source.split(",", 1)
    assert header == "data:image/jpeg;base64"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(jpeg))))
    assert decoded.shape == (20, 30, 3)  # the photo itself, not a resampled copy
    expected = np.round(photos[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(decoded.astype(float) - expected).mean() < 3  # JPEG: close, not exact
    x0s = sorted({t.x0 for t in images})
    assert len(x0s) == 3  # three columns
    y0s = sorted({t.y0 for t in images})
    assert len(y0s) == 2 and y0s[0] > 0  # two rows, room for the caption above the first


def test_photo_grid_is_small_enough_to_store_in_a_lesson():
    ramp = torch.linspace(0, 1, 128)  # smooth, like a photo
    photos = (ramp[None, None, :, None] * ramp[None, None, None, :]).expand(7, 3, -1, -1)
    fig = plots.photo_grid(photos, ["x"] * 7)
    assert len(fig.to_json()) < 7 * 128 * 128 * 3  # well under plotly's list of numbers


@pytest.mark.parametrize("images, captions, message", [
    (torch.rand(2, 8, 8), ["a", "b"], "colour images"),
    (torch.rand(2, 3, 8, 8), ["a"], "2 images but 1 captions"),
])
def test_photo_grid_bad_input(images, captions, message):
    with pytest.raises(ValueError, match=message):
        plots.photo_grid(images, captions)
