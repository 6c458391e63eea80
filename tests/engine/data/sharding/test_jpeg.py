import numpy as np
import tensorflow as tf

from engine.data.sharding.jpeg import jpeg_problem, jpeg_size


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
