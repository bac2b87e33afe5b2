#!/usr/bin/env python3
"""Makes the test images of Tests/Fixtures/images/ and Pillow's answers for them (the oracle of
Tests/PPImageTests).

Run it in a virtual environment outside the repository:

    python3 -m venv /work/venv-image && /work/venv-image/bin/pip install pillow numpy
    /work/venv-image/bin/python scripts/make-image-fixtures.py

    /work/venv-image/bin/python scripts/make-image-fixtures.py --stress /tmp/ppimage-stress 300   # optional, see stress()
    /work/venv-image/bin/python scripts/make-image-fixtures.py --imagenet /tmp/ppimage-imagenet 40   # optional, 256 crops

Writes, into Tests/Fixtures/images/:
  *.jpg *.png              the test images (deterministic content: seeded noise and gradients)
  reference.safetensors    U8 tensors: "decode/<file>" = np.array(Image.open(f).convert("RGB")) [H,W,3]
                           and "crop<S>/<file>" = center_crop_arr(that, S) [S,S,3] (ADM's function,
                           copied below as the official train.py uses it), and for the tall images
                           "crop<S>_pillow12/<file>" = the same as Pillow 12 and older compute it;
                           metadata "error/<file>" =
                           the exception Pillow raises for files it refuses, "pillow" = its version.
"""
import io
import json
import os
import re
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "images")


def center_crop_arr(pil_image, image_size):
    """ADM's center_crop_arr (guided-diffusion image_datasets.py), as DiT/SiT/PPFlow train.py use it."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size])


def center_crop_arr_pillow12(pil_image, image_size):
    """center_crop_arr as Pillow 12 and older compute it: every resize horizontal pass first. Pillow 13
    runs the vertical pass first when the height loses more than twice as many pixels as the width;
    two one-axis resizes give the old order exactly (a one-axis resize is one pass in every version)."""
    def resize(image, size, resample):
        return image.resize((size[0], image.size[1]), resample=resample).resize(size, resample=resample)
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = resize(pil_image, tuple(x // 2 for x in pil_image.size), Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = resize(pil_image, tuple(round(x * scale) for x in pil_image.size), Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size])


def picture(width, height, seed):
    """[H,W,3] uint8: gradients, a hard-edged disc (bicubic overshoot gets clipped) and noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = 255 * x / max(1, width - 1)
    g = 255 * y / max(1, height - 1)
    b = 128 + 127 * np.sin((x + 2 * y) / 3.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
    img[disc] = [250, 5, 250]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width, height, bit_depth, color_type, rows, plte=None):
    """A PNG from already packed scanlines (filter 0), for what Pillow cannot write (16-bit RGB, 2-bit gray)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    chunks = png_chunk(b"IHDR", ihdr)
    if plte is not None:
        chunks += png_chunk(b"PLTE", plte)
    chunks += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def interlaced_png(pixels):
    """An Adam7-interlaced 8-bit RGB PNG (Pillow reads these but cannot write them)."""
    height, width, _ = pixels.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


# YCCK and marker-less CMYK JPEGs: Pillow cannot write them, libjpeg can. A small C program is built
# with the system's cc and libjpeg when both are there; otherwise the committed files are kept.
YCCK_WRITER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
/* argv: width height colorspace(ycck|cmyk) adobe(0|1) < raw CMYK bytes > jpeg */
int main(int argc, char **argv) {
    int width = atoi(argv[1]), height = atoi(argv[2]);
    unsigned char *pixels = malloc((size_t)width * height * 4);
    if (fread(pixels, 4, (size_t)width * height, stdin) != (size_t)width * height) return 1;
    struct jpeg_compress_struct c; struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e); jpeg_create_compress(&c); jpeg_stdio_dest(&c, stdout);
    c.image_width = width; c.image_height = height; c.input_components = 4; c.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&c); jpeg_set_quality(&c, 92, TRUE);
    jpeg_set_colorspace(&c, argv[3][0] == 'y' ? JCS_YCCK : JCS_CMYK);
    c.write_Adobe_marker = atoi(argv[4]) ? TRUE : FALSE;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) { JSAMPROW row = pixels + (size_t)c.next_scanline * width * 4; jpeg_write_scanlines(&c, &row, 1); }
    jpeg_finish_compress(&c); jpeg_destroy_compress(&c); return 0;
}
"""


def libjpeg_cmyk_files():
    import shutil
    import subprocess
    import tempfile
    if shutil.which("cc") is None:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        source, program = os.path.join(folder, "w.c"), os.path.join(folder, "w")
        with open(source, "w") as f:
            f.write(YCCK_WRITER)
        if subprocess.run(["cc", "-O1", "-o", program, source, "-ljpeg"]).returncode != 0:
            return {}
        # Adobe convention (inverted) values, as Pillow's "CMYK;I" reads them back.
        cmyk = np.array(Image.fromarray(picture(27, 19, 21)).convert("CMYK"))
        stored = (255 - cmyk).astype(np.uint8).tobytes()
        out = {}
        for name, space, adobe in [("ycck_27x19.jpg", "ycck", "1"), ("cmyk_no_adobe_27x19.jpg", "cmyk", "0")]:
            result = subprocess.run([program, "27", "19", space, adobe], input=stored, capture_output=True, check=True)
            out[name] = result.stdout
        return out


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}

    def save(name, image, **options):
        buffer = io.BytesIO()
        image.save(buffer, **options)
        files[name] = buffer.getvalue()

    save("rgb_baseline_37x53.jpg", Image.fromarray(picture(37, 53, 1)), format="JPEG", quality=90)
    save("rgb_progressive_300x97.jpg", Image.fromarray(picture(300, 97, 2)), format="JPEG", quality=85,
         progressive=True)
    save("rgb_420_large_260x200.jpg", Image.fromarray(picture(260, 200, 3)), format="JPEG", quality=80,
         subsampling=2)
    save("gray_40x30.jpg", Image.fromarray(picture(40, 30, 4)[:, :, 1]), format="JPEG", quality=90)
    cmyk = Image.fromarray(picture(33, 21, 5)).convert("CMYK")
    save("cmyk_33x21.jpg", cmyk, format="JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display; Pillow's open does not apply it
    save("exif_rotated_20x10.jpg", Image.fromarray(picture(20, 10, 6)), format="JPEG", quality=90, exif=exif)
    files["truncated.jpg"] = files["rgb_baseline_37x53.jpg"][: len(files["rgb_baseline_37x53.jpg"]) * 6 // 10]
    # Only the 2-byte EOI marker missing: Pillow still refuses both.
    files["truncated_eoi_baseline.jpg"] = files["rgb_baseline_37x53.jpg"][:-2]
    files["truncated_eoi_progressive.jpg"] = files["rgb_progressive_300x97.jpg"][:-2]

    save("rgb_37x53.png", Image.fromarray(picture(37, 53, 7)), format="PNG")
    rgba = np.concatenate([picture(29, 31, 8), picture(29, 31, 9)[:, :, :1]], axis=-1)
    save("rgba_29x31.png", Image.fromarray(rgba, "RGBA"), format="PNG")
    # Much taller than wide: Pillow 13 resizes these vertical pass first (BOX halvings and bicubic).
    save("rgb_tall_23x301.png", Image.fromarray(picture(23, 301, 19)), format="PNG")
    save("rgb_tall_70x400.jpg", Image.fromarray(picture(70, 400, 20)), format="JPEG", quality=75)
    save("gray_23x19.png", Image.fromarray(picture(23, 19, 10)[:, :, 0]), format="PNG")
    la = np.stack([picture(17, 13, 11)[:, :, 0], picture(17, 13, 12)[:, :, 2]], axis=-1)
    save("la_17x13.png", Image.fromarray(la, "LA"), format="PNG")
    palette_image = Image.fromarray(picture(31, 27, 13)).quantize(colors=200)
    save("palette_31x27.png", palette_image, format="PNG", transparency=3)
    save("palette4_25x9.png", Image.fromarray(picture(25, 9, 14)).quantize(colors=16), format="PNG", bits=4)
    gray16 = (np.random.RandomState(15).rand(11, 7) ** 3 * 65535).astype(np.uint16)
    gray16[0, :4] = [0, 255, 256, 65535]
    save("gray16_7x11.png", Image.fromarray(gray16), format="PNG")  # mode I;16
    rgb16 = np.random.RandomState(16).randint(0, 65536, size=(5, 9, 3)).astype(">u2")
    files["rgb16_9x5.png"] = raw_png(9, 5, 16, 2, [row.tobytes() for row in rgb16])
    rgba16 = np.random.RandomState(17).randint(0, 65536, size=(4, 6, 4)).astype(">u2")
    files["rgba16_6x4.png"] = raw_png(6, 4, 16, 6, [row.tobytes() for row in rgba16])
    gray2 = np.random.RandomState(18).randint(0, 4, size=(3, 10)).astype(np.uint8)
    packed = [bytes(np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].reshape(-1))) for r in gray2]
    files["gray2_10x3.png"] = raw_png(10, 3, 2, 0, packed)
    # A palette of 2 entries and indices 0..3: Pillow shows indices past the PLTE as black.
    files["palette_short_4x1.png"] = raw_png(4, 1, 8, 3, [bytes([0, 1, 2, 200])], plte=bytes([10, 20, 30, 40, 50, 60]))
    save("one_1x1.png", Image.fromarray(np.array([[[12, 200, 77]]], dtype=np.uint8)), format="PNG")
    # A bit flipped inside the compressed image data (chunk CRC fixed up, so only zlib notices).
    good = bytearray(files["rgb_37x53.png"])
    at = good.index(b"IDAT")
    length = struct.unpack(">I", good[at - 4: at])[0]
    good[at + 4 + length // 2] ^= 0x55
    good[at + 4 + length: at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(good[at: at + 4 + length])) & 0xFFFFFFFF)
    files["corrupt_data.png"] = bytes(good)
    files["not_an_image.jpg"] = b"this is a text file with an image's name\n"
    # CRCs: Pillow checks the chunks before the first IDAT only; a file may end without IEND; a zlib
    # stream whose Adler-32 is wrong is refused.
    tiny = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 13
    tiny_rows = [row.tobytes() for row in tiny]

    def tiny_png(before=b"", idat_crc=None, after=b"", end=True, adler=True):
        ihdr = struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0)
        stream = zlib.compress(b"".join(b"\x00" + r for r in tiny_rows))
        if not adler:
            stream = stream[:-4] + bytes(4)
        idat = png_chunk(b"IDAT", stream)
        if idat_crc is not None:
            idat = idat[:-4] + struct.pack(">I", idat_crc)
        return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + before + idat + after
                + (png_chunk(b"IEND", b"") if end else b""))

    bad_text = png_chunk(b"tEXt", b"k\x00v")[:-4] + b"\x00\x00\x00\x01"
    files["crc_bad_text_before_idat.png"] = tiny_png(before=bad_text)
    files["crc_bad_idat.png"] = tiny_png(idat_crc=1)
    files["crc_bad_text_after_idat.png"] = tiny_png(after=bad_text)
    files["no_iend.png"] = tiny_png(end=False)
    files["bad_adler.png"] = tiny_png(adler=False)
    files["rgb_interlaced_13x11.png"] = interlaced_png(picture(13, 11, 22))
    save("one_1x1.jpg", Image.fromarray(np.array([[[12, 200, 77]]], dtype=np.uint8)), format="JPEG")
    built = libjpeg_cmyk_files()
    for name in ["ycck_27x19.jpg", "cmyk_no_adobe_27x19.jpg"]:
        if name in built:
            files[name] = built[name]
        elif os.path.exists(os.path.join(OUT, name)):
            with open(os.path.join(OUT, name), "rb") as f:
                files[name] = f.read()

    tensors = {}
    metadata = {"pillow": PIL.__version__, "numpy": np.__version__}
    for name in sorted(files):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(files[name])
        try:
            rgb = Image.open(io.BytesIO(files[name])).convert("RGB")
        except Exception as error:  # the refusals the tests expect
            metadata[f"error/{name}"] = re.sub(r" at 0x[0-9a-f]+", "", f"{type(error).__name__}: {error}")
            continue
        tensors[f"decode/{name}"] = np.array(rgb)
        sizes = [16, 32] + ([64] if name.startswith("rgb_420_large") else [])
        for size in sizes:
            tensors[f"crop{size}/{name}"] = np.array(center_crop_arr(rgb, size))
            if name.startswith("rgb_tall"):
                tensors[f"crop{size}_pillow12/{name}"] = np.array(center_crop_arr_pillow12(rgb, size))

    write_safetensors(os.path.join(OUT, "reference.safetensors"), tensors, metadata)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(files)} images, {len(tensors)} reference arrays, {total} bytes in {OUT}", file=sys.stderr)
    for key in sorted(metadata):
        if key.startswith("error/"):
            print(f"  {key}: {metadata[key]}", file=sys.stderr)


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype=np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_case(folder, name, rgb, width, height, size):
    """Pillow's decoded RGB and its center crop next to the image; returns the manifest line."""
    with open(os.path.join(folder, name + ".decoded"), "wb") as f:
        f.write(np.array(rgb).tobytes())
    with open(os.path.join(folder, name + ".crop"), "wb") as f:
        f.write(np.array(center_crop_arr(rgb, size)).tobytes())
    return f"{name} {width} {height} {size}"


def write_manifest(folder, lines):
    with open(os.path.join(folder, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def stress(folder, count, seed=1234):
    """A larger random set, not committed: random sizes (1...400 a side), JPEG qualities, subsamplings,
    progressive or not, PNG modes, and crop sizes 4...160 (including crops larger than the image).
    Writes <i>.<ext>, <i>.decoded ([H,W,3] raw bytes), <i>.crop ([S,S,3] raw bytes) and manifest.txt
    ("name width height size" per line) for PPImageTests' testRandomImagesMatchPillow
    (PPIMAGE_STRESS_DIR=folder)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    lines = []
    for i in range(count):
        width, height = int(rng.randint(1, 401)), int(rng.randint(1, 401))
        if rng.rand() < 0.2:
            width = int(rng.randint(1, 12))
        pixels = picture(width, height, seed + i)
        kind = rng.choice(["jpeg", "jpeg-progressive", "png-rgb", "png-rgba", "png-l", "png-p", "jpeg-l", "jpeg-cmyk"])
        buffer = io.BytesIO()
        if kind.startswith("jpeg"):
            image = Image.fromarray(pixels)
            image = image.convert("L") if kind == "jpeg-l" else image.convert("CMYK") if kind == "jpeg-cmyk" else image
            options = dict(format="JPEG", quality=int(rng.randint(30, 101)), progressive=kind == "jpeg-progressive")
            if image.mode == "RGB":
                options["subsampling"] = int(rng.randint(0, 3))
            image.save(buffer, **options)
            name = f"{i:04d}.jpg"
        else:
            image = Image.fromarray(pixels)
            image = {"png-rgb": image, "png-rgba": image.convert("RGBA"), "png-l": image.convert("L"),
                     "png-p": image.quantize(colors=int(rng.randint(2, 257)))}[kind]
            image.save(buffer, format="PNG")
            name = f"{i:04d}.png"
        data = buffer.getvalue()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        size = int(rng.randint(4, 161))
        lines.append(write_case(folder, name, rgb, width, height, size))
    write_manifest(folder, lines)
    print(f"{count} random images in {folder}", file=sys.stderr)


def imagenet_like(folder, count, size=256):
    """JPEGs of ImageNet's common sizes (500x375, 375x500, 500x333, 640x480, 1024x768; quality 90) with
    crops at the training size 256, in the --stress folder format."""
    os.makedirs(folder, exist_ok=True)
    sizes = [(500, 375), (375, 500), (500, 333), (640, 480), (1024, 768)]
    lines = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        buffer = io.BytesIO()
        Image.fromarray(picture(width, height, 100 + i)).save(buffer, format="JPEG", quality=90)
        name = f"{i:04d}.jpg"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(buffer.getvalue())
        rgb = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        lines.append(write_case(folder, name, rgb, width, height, size))
    write_manifest(folder, lines)
    print(f"{count} ImageNet-sized images in {folder}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stress":
        stress(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--imagenet":
        imagenet_like(sys.argv[2], int(sys.argv[3]))
    else:
        main()
