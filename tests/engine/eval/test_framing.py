"""Framings move the crop window exactly as stated, and "clean" is evaluation's own crop."""

import numpy as np
import pytest
import tensorflow as tf

from engine.config import InputConfig
from engine.data.manifest import read_manifest
from engine.data.pipeline import make_dataset
from engine.eval import framing
from engine.eval.framing import Framing, framed_dataset, framed_image
from engine.tasks import TASKS


def _jpeg(size=100) -> tf.Tensor:
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (size // 10, size // 10, 3)).repeat(10, 0).repeat(10, 1)
  return tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100, chroma_downsampling=False)


def _framed(box, f: Framing, size=(50, 50)) -> np.ndarray:
  config = InputConfig("unused", image_size=size, crop_box=box, training=False)
  return framed_image(_jpeg(), config, f).numpy()


@pytest.mark.parametrize("crop_box", [None, (0.09, 0.0, 0.82, 1.0)])
def test_clean_framing_is_the_eval_pipelines_crop_bit_for_bit(celeba_shards, crop_box):
  config = InputConfig(celeba_shards, split="validation", image_size=(32, 32),
                       global_batch_size=8, training=False, crop_box=crop_box)
  manifest = read_manifest(celeba_shards)
  expected = np.concatenate([b[0].numpy() for b in make_dataset(config)])
  clean = framed_dataset(config, manifest, TASKS.get("attribute"), framing.FRAMINGS["clean"])
  got = np.concatenate([b[0].numpy() for b in clean])
  assert got.shape == expected.shape == (32, 32, 32, 3)
  np.testing.assert_array_equal(got, expected)


def test_a_shift_is_the_window_moved_by_that_fraction():
  # a 50 px window at (10, 10); 20% of its width is 10 px: the window at (10, 20).
  shifted = _framed((0.1, 0.1, 0.5, 0.5), Framing("s", shift_x=0.2))
  np.testing.assert_array_equal(shifted, _framed((0.1, 0.2, 0.5, 0.5), Framing("clean")))
  down = _framed((0.1, 0.1, 0.5, 0.5), Framing("d", shift_y=0.2))
  np.testing.assert_array_equal(down, _framed((0.2, 0.1, 0.5, 0.5), Framing("clean")))


def test_rotation_turns_the_window_about_its_centre_counter_clockwise():
  clean = _framed((0.2, 0.2, 0.5, 0.5), Framing("clean"))
  turned = _framed((0.2, 0.2, 0.5, 0.5), Framing("r", rotation_deg=90.0))
  np.testing.assert_allclose(turned, np.rot90(clean, k=1), atol=1e-3)


def test_zoom_scales_about_the_centre_and_fills_outside_with_edge_pixels():
  clean = _framed(None, Framing("clean"), size=(100, 100))
  tight = _framed(None, Framing("t", scale=2.0), size=(100, 100))
  # scale 2 about the centre (49.5): output 64 reads 56.75, output 24 reads 36.75, both
  # inside one 10 px block of the test image (so JPEG's rounding is all that differs).
  np.testing.assert_allclose(tight[64, 24], clean[56, 36], atol=2)
  np.testing.assert_allclose(tight[24, 64], clean[36, 56], atol=2)
  assert np.abs(tight[64, 24] - clean[64, 24]).max() > 10  # and it did move
  loose = _framed(None, Framing("l", scale=0.5), size=(100, 100))
  np.testing.assert_allclose(loose[0, 0], clean[0, 0], atol=1e-3)  # edge repeated


def test_names_parse_and_unknown_ones_are_listed():
  assert len(framing.parse_framings(["standard"])) == len(framing.STANDARD_FRAMINGS)
  assert [f.name for f in framing.parse_framings(["clean", "tight_1.3", "clean"])] == [
      "clean", "tight_1.3"]
  with pytest.raises(ValueError, match="unknown framing 'tilted'; known: standard, clean"):
    framing.parse_framings(["tilted"])
