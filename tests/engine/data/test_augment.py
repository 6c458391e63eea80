import numpy as np
import pytest
import tensorflow as tf

from engine.config import AugmentConfig
from engine.data import augment as A

CFG = AugmentConfig(flip=True, rotation_deg=15, zoom=0.2, translate=0.1, shear_deg=10,
                      brightness=0.2, contrast=0.3, saturation=0.3, erasing_prob=1.0)
OPS = {
    "flip": lambda x, s: A.random_geometry(x, s, AugmentConfig(flip=True)),
    "rotation": lambda x, s: A.random_geometry(x, s, AugmentConfig(rotation_deg=20.0)),
    "zoom": lambda x, s: A.random_geometry(x, s, AugmentConfig(zoom=0.2)),
    "translation": lambda x, s: A.random_geometry(x, s, AugmentConfig(translate=0.2)),
    "shear": lambda x, s: A.random_geometry(x, s, AugmentConfig(shear_deg=15.0)),
    "brightness": lambda x, s: A.random_brightness(x, s, 0.3),
    "contrast": lambda x, s: A.random_contrast(x, s, 0.5),
    "saturation": lambda x, s: A.random_saturation(x, s, 0.5),
    "erasing": lambda x, s: A.random_erasing(x, s, 1.0),
    "all": lambda x, s: A.augment(x, s, CFG),
}


def _image(h=24, w=20):
  return tf.constant(np.random.default_rng(0).uniform(0, 255, (h, w, 3)), tf.float32)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_keeps_shape_and_range_eagerly_and_in_tf_data(name):
  op, image = OPS[name], _image()
  seeds = [tf.constant([s, 7], tf.int32) for s in range(8)]
  eager = [op(image, s) for s in seeds]
  ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(lambda s: op(image, s))
  graph = list(ds)
  for e, g in zip(eager, graph):
    assert e.shape == image.shape and g.shape == image.shape
    assert float(tf.reduce_min(e)) >= 0.0 and float(tf.reduce_max(e)) <= 255.0
    np.testing.assert_allclose(e.numpy(), g.numpy(), atol=1e-3)  # same seed, same result
  assert any(not np.allclose(e.numpy(), image.numpy()) for e in eager)  # it does something


def test_flip_mirrors_exactly():
  image = _image()
  outs = [A.random_geometry(image, tf.constant([s, 0]), AugmentConfig(flip=True))
          for s in range(8)]
  flipped = [o for o in outs if not np.allclose(o.numpy(), image.numpy(), atol=1e-3)]
  assert flipped and len(flipped) < len(outs)  # about half the draws
  np.testing.assert_allclose(flipped[0].numpy(), image.numpy()[:, ::-1], atol=1e-3)


def _scales(config, n=2000):
  matrices = A.geometry_matrices(tf.constant([3, 4]), n, (32, 32), config).numpy()
  return np.sqrt(np.abs(np.linalg.det(matrices[:, :, :2])))  # no rotation/shear: the zoom


def test_zoom_range_draws_scales_in_its_bounds_and_zoom_keeps_its_old_draws():
  scales = _scales(AugmentConfig(zoom_range=(0.75, 1.45)))
  assert 0.75 <= scales.min() < 0.8 and 1.4 < scales.max() <= 1.45
  assert abs(np.mean(scales > 1.3) - 0.15 / 0.7) < 0.04  # uniform over the range
  # The float form is ImageDataGenerator's [1 - z, 1 + z], drawn exactly as before
  # zoom_range existed, so a resumed run sees the same augmentation.
  s_zoom = tf.unstack(tf.random.experimental.stateless_split(tf.constant([3, 4]), 6))[1]
  expected = 1.0 + tf.random.stateless_uniform([2000], s_zoom, -0.3, 0.3).numpy()
  np.testing.assert_allclose(_scales(AugmentConfig(zoom=0.3)), expected, rtol=1e-5)
  assert AugmentConfig(zoom=0.3).zoom_bounds == (0.7, 1.3)
  assert AugmentConfig(zoom_range=(1.0, 1.0)).affine is False


@pytest.mark.parametrize("kwargs,match", [
    ({"zoom": 0.3, "zoom_range": (0.8, 1.4)}, "both set the zoom"),
    ({"zoom_range": (1.4, 0.8)}, "lower <= upper"),
    ({"zoom_range": (0.0, 1.2)}, "0 < lower"),
    ({"zoom": 1.5}, r"zoom must be in \[0, 1\)"),
    ({"random_resized_crop": True, "crop_scale": (0.0, 1.0)}, "crop_scale must be"),
    ({"crop_scale": (0.5, 1.2)}, "upper <= 1"),
])
def test_bad_zoom_is_refused_by_name(kwargs, match):
  with pytest.raises(ValueError, match=match):
    AugmentConfig(**kwargs).validate()


def test_max_zoom_in_is_the_largest_face_enlargement_training_drew():
  """What predict's alignment may zoom a tight photo in by (engine.eval.faces.fit_zoom)."""
  assert AugmentConfig().max_zoom_in == 1.0
  assert AugmentConfig(zoom=0.2).max_zoom_in == pytest.approx(1.25)
  assert AugmentConfig(zoom_range=(0.6, 1.7)).max_zoom_in == pytest.approx(1 / 0.6)
  assert AugmentConfig(zoom_range=(1.1, 1.7)).max_zoom_in == 1.0  # zoom-outs only
  # a random resized crop of a quarter of the image shows the face at twice its size
  assert AugmentConfig(random_resized_crop=True, crop_scale=(0.25, 1.0)).max_zoom_in == 2.0
  assert AugmentConfig(crop_scale=(0.25, 1.0)).max_zoom_in == 1.0  # crop off: not drawn


def test_zero_magnitude_affine_is_identity():
  image = _image()
  out = A.random_geometry(image, tf.constant([1, 2]), AugmentConfig(rotation_deg=1e-9))
  np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-2)


def test_erasing_covers_a_rectangle_only():
  image = tf.concat([tf.zeros([32, 16, 3]), tf.fill([32, 16, 3], 200.0)], axis=1)
  out = A.random_erasing(image, tf.constant([3, 4]), 1.0).numpy()
  ys, xs = np.nonzero((out != image.numpy()).any(-1))
  assert 0 < len(ys) < 32 * 32
  assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a full rectangle
  never = A.random_erasing(image, tf.constant([3, 4]), 0.0).numpy()
  np.testing.assert_array_equal(never, image.numpy())


def _smooth(h=40, w=32):
  # A smooth image: OpenCV 4 samples at 1/32-pixel positions, which on pixel noise alone
  # moves values by several levels; on smooth (photo-like) content it stays far below 0.5.
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  return np.stack([127 + 120 * np.sin(x / 5), 127 + 120 * np.cos(y / 6),
                   250 * (x + y) / (h + w)], axis=-1)


def _tf_warp(images, matrices, output_size):
  n = images.shape[0]
  flat = tf.concat([tf.reshape(matrices, [n, 6]), tf.zeros([n, 2])], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=flat, output_shape=list(output_size), fill_value=0.0,
      interpolation="BILINEAR", fill_mode="NEAREST").numpy()


@pytest.mark.parametrize("output_size", [(40, 32), (24, 20)])
def test_batch_warp_matches_tensorflow_warp_inside_the_image(output_size):
  config = AugmentConfig(flip=True, rotation_deg=15, shear_deg=8, zoom=0.1, translate=0.05)
  smooth = _smooth()
  images = tf.constant(np.stack([smooth, smooth[::-1]]), tf.float32)
  seed = tf.constant([5, 6])
  ours = A.random_geometry(images, seed, config, output_size).numpy()
  matrices = A.geometry_matrices(seed, 2, output_size, config, source_size=(40, 32))
  reference = _tf_warp(images, matrices, output_size)
  assert ours.shape == (2, *output_size, 3)
  # Same bilinear warp (with the resize folded in), same fill (repeat the edge pixel).
  np.testing.assert_allclose(ours, reference, atol=0.5)


def test_resize_only_warp_matches_tf_image_resize():
  images = tf.constant(_smooth(72, 60)[None], tf.float32)
  ours = A.random_geometry(images, tf.constant([0, 0]), AugmentConfig(), (40, 32)).numpy()
  expected = tf.image.resize(images, (40, 32), method="bilinear").numpy()
  np.testing.assert_allclose(ours, expected, atol=0.5)  # half-pixel centres, like TF
  as_uint8 = tf.cast(images, tf.uint8)
  uint8 = A.random_geometry(as_uint8, tf.constant([0, 0]), AugmentConfig(), (40, 32))
  expected = tf.image.resize(as_uint8, (40, 32), method="bilinear").numpy()
  assert uint8.dtype == tf.uint8  # OpenCV rounds to the nearest level
  assert np.abs(uint8.numpy().astype(np.float32) - expected).max() <= 1.0


def test_batch_warp_is_seeded_and_keeps_shape_in_tf_data():
  config = AugmentConfig(rotation_deg=20)
  images = tf.stack([_image()] * 3)
  ds = tf.data.Dataset.from_tensors(images).repeat(2).map(
      lambda x: A.random_geometry(x, tf.constant([1, 1]), config))
  first, second = list(ds)
  assert first.shape == images.shape
  np.testing.assert_array_equal(first.numpy(), second.numpy())
  assert not np.allclose(first.numpy()[0], first.numpy()[1])  # each image its own draw


def test_flip_folds_into_the_batch_warp():
  images = tf.stack([_image(24, 20)] * 16)
  out = A.random_geometry(images, tf.constant([2, 3]),
                          AugmentConfig(flip=True, rotation_deg=1e-6)).numpy()
  mirrored = [np.allclose(o, images[0].numpy()[:, ::-1], atol=1e-2) for o in out]
  kept = [np.allclose(o, images[0].numpy(), atol=1e-2) for o in out]
  assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "erasing", "flip"])
def test_batch_ops_draw_per_image_and_match_the_single_image_op(name):
  op = OPS[name]
  images = tf.stack([_image()] * 8)
  seed = tf.constant([4, 2])
  batch = op(images, seed).numpy()
  assert batch.shape == images.shape
  assert len({b.tobytes() for b in batch}) > 1  # not one draw for the whole batch
  single = op(images[0], seed).numpy()  # a batch of one draws like the first image
  np.testing.assert_allclose(single, op(images[:1], seed).numpy()[0], atol=1e-3)


def test_augment_resizes_and_keeps_uint8():
  images = tf.cast(tf.stack([_image(48, 40)] * 4), tf.uint8)
  out = A.augment(images, tf.constant([1, 2]), CFG, (24, 20))
  assert out.shape == (4, 24, 20, 3) and out.dtype == tf.uint8
