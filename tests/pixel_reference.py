"""The release's evaluation input, written independently, and test images.

`release_pixels` is the pipeline of apple/ml-aim's `val_transforms` with
torchvision's rules written out by hand (torchvision is not installed
here): Pillow opens the file and converts it to RGB; `Resize(size)` with
`size = ceil(image_size / 0.875)` sets the short side to `size` and the
long side to `int(size * long / short)`, with Pillow's bicubic resize of
the whole image; `CenterCrop(image_size)` keeps the window whose corner is
`int(round((h - crop) / 2.0))`. `ToTensor` and `Normalize` only divide by
255 and standardise, so comparing uint8 levels compares everything.

`write_format_images` writes real photo content in every format the
evaluation reads (with Pillow, plus a hand-made 16-bit RGB PNG).
"""

import io
import math
import os
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def skimage_files():
    """The real images that ship in scikit-image's data folder."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names if n.endswith(EXTENSIONS)]


def release_size(image_size):
    """The release's resize: `math.ceil(img_size / 0.875)`."""
    return math.ceil(image_size / 0.875)


def release_pixels(path, image_size=224):
    """The release's uint8 `(image_size, image_size, 3)` input for `path`."""
    size = release_size(image_size)
    with Image.open(path) as image:
        image = image.convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (
        (new_short, new_long) if width <= height else (new_long, new_short)
    )
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image)


def to_levels(normalised):
    """Undoes the ImageNet normalisation: float uint8 levels."""
    normalised = np.asarray(normalised, np.float64)
    return (normalised * IMAGENET_STD + IMAGENET_MEAN) * 255.0


def compare(levels, reference):
    """`{mean, max, identical}` of float levels against uint8 pixels."""
    difference = np.abs(np.asarray(levels, np.float64) - reference)
    return {
        "mean": float(difference.mean()),
        "max": float(difference.max()),
        "identical": bool(difference.max() < 0.01),
    }


def _png16_rgb(path, pixels):
    """A 16-bit RGB PNG (Pillow cannot write one), by hand."""
    height, width, _ = pixels.shape
    rows = [b"\x00" + row.astype(">u2").tobytes() for row in pixels]

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(b"".join(rows))))
        f.write(chunk(b"IEND", b""))


def _without_adobe_marker(data):
    """A JPEG's bytes without its Adobe APP14 segment (plain CMYK)."""
    start = data.index(b"\xff\xee")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    return data[:start] + data[start + 2 + length :]


def write_format_images(folder, photo):
    """Writes `photo` (uint8 RGB, about 300 x 450 or more) in every format.

    Returns:
        `{name: path}`.
    """
    os.makedirs(folder, exist_ok=True)
    rgb = Image.fromarray(photo)
    base = rgb.resize((450, 300), Image.Resampling.LANCZOS)
    ramp = np.linspace(0, 255, base.width, dtype=np.uint8)
    alpha = Image.fromarray(np.tile(ramp, (base.height, 1)))
    paths = {}

    def save(name, image, **kwargs):
        path = os.path.join(folder, name)
        image.save(path, **kwargs)
        paths[name] = path

    save("rgb_420.jpg", base, quality=90)
    save("rgb_444.jpg", base, quality=95, subsampling=0)
    save("rgb_422.jpg", base, quality=85, subsampling=1)
    save("odd_size.jpg", rgb.resize((333, 251)), quality=75)
    save("progressive.jpg", base, quality=90, progressive=True)
    save("grey.jpg", base.convert("L"), quality=90)
    save("cmyk_adobe.jpg", base.convert("CMYK"), quality=90)
    buffer = io.BytesIO()
    base.convert("CMYK").save(buffer, "JPEG", quality=90)
    paths["cmyk_plain.jpg"] = os.path.join(folder, "cmyk_plain.jpg")
    with open(paths["cmyk_plain.jpg"], "wb") as f:
        f.write(_without_adobe_marker(buffer.getvalue()))
    exif = Image.Exif()
    exif[0x0112] = 6  # "Rotate 90 CW": Pillow (and so the release) ignores it.
    save("exif_rotated.jpg", base, quality=90, exif=exif)
    save("tall.jpg", rgb.resize((260, 700)), quality=90)
    save("tiny.jpg", rgb.resize((31, 23)), quality=90)
    save("rgb.png", base)
    save("grey.png", base.convert("L"))
    save("palette.png", base.quantize(256))
    palette = base.quantize(64)
    save("palette_transparent.png", palette, transparency=0)
    grey_alpha = base.convert("L")
    grey_alpha.putalpha(alpha)
    save("grey_alpha.png", grey_alpha)
    rgba = base.copy()
    rgba.putalpha(alpha)
    save("rgba.png", rgba)
    save("bilevel.png", base.convert("1"))
    grey16 = np.asarray(base.convert("L"), np.uint16) * 257
    save("grey16.png", Image.fromarray(grey16.astype(np.uint16)))
    paths["rgb16.png"] = os.path.join(folder, "rgb16.png")
    _png16_rgb(paths["rgb16.png"], np.asarray(base, np.uint16) * 257 + 3)
    save("tiny.png", rgb.resize((7, 5)))
    save("still.gif", base)
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:])
    save("rgb.bmp", base)
    save("palette.bmp", base.quantize(256))
    save("lossy.webp", base, quality=80)
    save("lossless.webp", base, lossless=True)
    save("animated.webp", frames[0], save_all=True, append_images=frames[1:])
    return paths


def class_folder(root, files):
    """Copies `files` into `root/images/` (one class, ImageNet layout)."""
    target = os.path.join(root, "images")
    os.makedirs(target, exist_ok=True)
    copies = []
    for i, path in enumerate(files):
        copy = os.path.join(target, f"{i:03d}_{os.path.basename(path)}")
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies
