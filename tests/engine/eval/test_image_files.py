"""Image files as predict reads them: decoded as the pipeline decodes, upright, and
refused from their header when too large."""

import struct

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from engine.eval.image_files import load_image


def _bmp_header(width: int, height: int) -> bytes:
  """A 54-byte BMP header without pixels (Pillow reads the size; OpenCV would allocate)."""
  info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
  return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def test_jpeg_decoded_as_the_pipeline_and_turned_upright(tmp_path):
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, (24, 40, 3), np.uint8)
  path = str(tmp_path / "phone.jpg")
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
  Image.fromarray(pixels).save(path, exif=exif.tobytes())
  with open(path, "rb") as f:
    stored = tf.io.decode_jpeg(f.read(), channels=3).numpy()
  image = load_image(path)
  assert image.shape == (40, 24, 3)
  np.testing.assert_array_equal(image, np.rot90(stored, -1))  # bit-exact with TF's decoder
  with Image.open(path) as pil:
    upright = np.asarray(ImageOps.exif_transpose(pil))
  assert np.abs(image.astype(int) - upright).mean() < 3  # Pillow: another DCT, same picture

  png = str(tmp_path / "plain.png")
  cv2.imwrite(png, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
  np.testing.assert_array_equal(load_image(png), pixels)
  with pytest.raises(ValueError, match="notes.jpg: not a readable image"):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    load_image(str(bad))


def test_image_size_is_checked_from_the_header_before_decoding(tmp_path):
  path = tmp_path / "face.jpg"
  cv2.imwrite(str(path), np.zeros((60, 50, 3), np.uint8))
  assert load_image(str(path), max_pixels=3000).shape == (60, 50, 3)
  with pytest.raises(ValueError, match=r"face.jpg: 50x60 pixels \(0.0 MP\) is over the limit "
                                       r"of 2,999 pixels"):
    load_image(str(path), max_pixels=2999)
  # BMP and others: the size comes from Pillow's header parse, with Pillow's own
  # decompression-bomb warning silenced (the limit is ours) or its error passed on.
  (tmp_path / "big.bmp").write_bytes(_bmp_header(10000, 10000))
  with pytest.raises(ValueError, match="10000x10000 pixels"):
    load_image(str(tmp_path / "big.bmp"))
  (tmp_path / "bomb.bmp").write_bytes(_bmp_header(20000, 20000))
  with pytest.raises(ValueError, match="bomb.bmp: too large to decode .*400000000 pixels"):
    load_image(str(tmp_path / "bomb.bmp"))
