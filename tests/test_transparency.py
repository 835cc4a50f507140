"""Images with transparent pixels (cutouts, logos, sprites, web GIFs) are seen on white, as a viewer shows them.

What a PNG keeps under its transparent pixels differs from tool to tool (black, the removed background, noise);
dropping the alpha channel would show one object on several backgrounds. hymenoptera's bee, cut out.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import HYMENOPTERA, needs_shared
from PIL import Image, ImageDraw

from headstart.tasks.image.data import Sample
from headstart.tasks.image.dataset import ImageStore
from headstart.tasks.image.decode import decode, open_image

pytestmark = needs_shared(HYMENOPTERA)
PHOTO = HYMENOPTERA / "train" / "bees" / "16838648_415acd9e3f.jpg"
BOX = (100, 60, 400, 300)  # the ellipse kept


def _photo_and_mask() -> tuple[Image.Image, Image.Image]:
    photo = Image.open(PHOTO).convert("RGB")
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse(BOX, fill=255)
    return photo, mask


def _png(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()


def _cutout(hidden: str) -> bytes:
    """The bee's ellipse on transparent pixels that keep ``hidden`` underneath: black, the photo, or noise."""
    photo, mask = _photo_and_mask()
    under = {"black": Image.new("RGB", photo.size), "photo": photo,
             "noise": Image.fromarray(np.random.default_rng(0).integers(0, 256, (photo.height, photo.width, 3),
                                                                        dtype=np.uint8))}[hidden]
    cut = Image.composite(photo, under, mask)
    cut.putalpha(mask)
    return _png(cut)


def test_a_cutout_is_seen_on_white_whatever_its_transparent_pixels_keep():
    photo, mask = _photo_and_mask()
    seen = {hidden: np.asarray(open_image(_cutout(hidden)), dtype=np.int16) for hidden in ("black", "photo", "noise")}
    outside, inside = np.asarray(mask) == 0, np.asarray(mask) == 255
    for hidden, pixels in seen.items():
        assert pixels.shape == (photo.height, photo.width, 3), hidden
        assert (pixels[outside] == 255).all(), hidden  # white where nothing is shown
        assert np.array_equal(pixels[inside], np.asarray(photo, dtype=np.int16)[inside]), hidden
    assert np.array_equal(seen["black"], seen["noise"])
    # as the model sees it (resized): the same picture from every cutout
    resized = [np.asarray(decode(_cutout(h), 224, "bilinear")) for h in ("black", "photo", "noise")]
    assert all(np.array_equal(resized[0], r) for r in resized[1:])


def test_palette_images_with_a_transparent_colour_and_opaque_alpha_channels():
    photo, mask = _photo_and_mask()
    palette = photo.quantize(200)
    indices = np.asarray(palette).copy()
    indices[np.asarray(mask) == 0] = 200  # the transparent colour: black in the palette
    sprite = Image.fromarray(indices, "P")
    sprite.putpalette(palette.getpalette()[:600] + [0, 0, 0] * 56)
    for fmt in ("PNG", "GIF"):
        out = io.BytesIO()
        sprite.save(out, fmt, transparency=200)
        pixels = np.asarray(open_image(out.getvalue()))
        assert (pixels[np.asarray(mask) == 0] == 255).all(), fmt
    opaque = photo.copy()
    opaque.putalpha(255)  # an alpha channel that hides nothing: the photo as it is
    assert np.array_equal(np.asarray(open_image(_png(opaque)).convert("RGB")), np.asarray(photo))


@pytest.mark.parametrize("count", [0, 2])
def test_the_data_line_counts_the_images_put_on_white(tmp_path, count):
    samples = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        path.write_bytes(_cutout("black") if i < count else _png(Image.open(PHOTO)))
        samples.append(Sample(path, 0))
    note = ImageStore(samples, 64, "bilinear").read_note()
    assert note == (f"; {count} image(s) with transparent pixels shown on white" if count else "")
