import numpy as np
import pytest
import tensorflow as tf

from engine.data.sharding.jpeg import (jpeg_orientation, jpeg_problem, jpeg_size, upright,
                                       upright_size)


def _jpeg(h=12, w=20, progressive=False):
  pixels = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
  return tf.io.encode_jpeg(pixels, progressive=progressive).numpy()


def test_whole_jpeg_passes_and_reports_size():
  for progressive in (False, True):
    data = _jpeg(progressive=progressive)
    assert jpeg_problem(data) is None
    assert jpeg_size(data) == (12, 20)


def test_truncated_jpeg_is_caught_at_any_cut():
  data = _jpeg()
  for cut in (10, 200, len(data) // 2, len(data) - 1):
    assert "truncated" in jpeg_problem(data[:cut]) or "corrupt" in jpeg_problem(data[:cut])


def test_non_jpeg_bytes_are_named():
  png = tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy()
  assert "not a JPEG" in jpeg_problem(png)
  assert "not a JPEG" in jpeg_problem(b"<html>not an image</html>")
  assert "not a JPEG" in jpeg_problem(b"")


def _exif_jpeg(pixels, orientation, path):
  from PIL import Image

  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
  return open(path, "rb").read()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_read_and_turned_upright_as_pillow_does(orientation, tmp_path):
  from PIL import Image, ImageOps

  pixels = np.random.default_rng(orientation).integers(0, 255, (6, 10, 3), dtype=np.uint8)
  data = _exif_jpeg(pixels, orientation, tmp_path / "x.jpg")
  assert jpeg_orientation(data) == orientation
  with Image.open(tmp_path / "x.jpg") as pil:
    expected = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
  decoded = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB"))
  np.testing.assert_array_equal(upright(decoded, orientation), expected)
  assert upright_size((6, 10), orientation) == expected.shape[:2]


def test_no_exif_or_broken_exif_means_upright():
  data = _jpeg()
  assert jpeg_orientation(data) == 1
  # An APP1 "Exif" block whose TIFF header is garbage.
  broken = data[:2] + b"\xff\xe1\x00\x0cExif\x00\x00XXXX" + data[2:]
  assert jpeg_problem(broken) is None and jpeg_orientation(broken) == 1
