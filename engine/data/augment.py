"""In-graph, seeded augmentation ops: one small op per transform.

Every op takes an image `[H, W, 3]` with values in [0, 255] and a stateless seed (int32
`[2]`), returns an image of the same shape in the same range, and works eagerly and
inside tf.data; `random_affine_batch` takes a batch `[B, H, W, 3]` (one warp call per
batch, by OpenCV: TensorFlow's CPU kernel is 8x slower). Magnitudes follow Keras' ImageDataGenerator where it has one, so
the seeds' recipes port directly (rotation in degrees, shifts and zoom as fractions).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations to apply; 0 / False turns one off."""

  flip: bool = False
  rotation_deg: float = 0.0
  zoom: float = 0.0
  translate: float = 0.0
  shear_deg: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  random_resized_crop: bool = False
  crop_scale: tuple[float, float] = (0.35, 1.0)
  erasing_prob: float = 0.0

  @property
  def affine(self) -> bool:
    return any((self.rotation_deg, self.zoom, self.translate, self.shear_deg))


def _uniform(seed, low, high):
  return tf.random.stateless_uniform([], seed, low, high)


def _sub_seeds(seed, n: int):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def random_flip(image, seed):
  return tf.image.stateless_random_flip_left_right(image, seed)


def random_zoom_shift_resize(image, seed, out_size: tuple[int, int], config: AugmentConfig):
  """Zoom and translation AND the resize to `out_size`, as one `crop_and_resize` box.

  Without rotation or shear the warp is an axis-aligned box, so it costs no more than
  the plain resize it replaces. Rotation and shear go through `random_affine_batch`.
  """
  if config.rotation_deg or config.shear_deg:
    raise ValueError("random_zoom_shift_resize does zoom and translation only; rotation and "
                     "shear need random_affine_batch")
  s_zoom, s_tx, s_ty = _sub_seeds(seed, 3)
  z = _uniform(s_zoom, 1 - config.zoom, 1 + config.zoom) if config.zoom else 1.0
  tx = _uniform(s_tx, -config.translate, config.translate) if config.translate else 0.0
  ty = _uniform(s_ty, -config.translate, config.translate) if config.translate else 0.0
  box = tf.stack([0.5 + ty - z / 2, 0.5 + tx - z / 2, 0.5 + ty + z / 2, 0.5 + tx + z / 2])
  out = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], box[None], [0], out_size,
                                 extrapolation_value=0.0)
  return tf.clip_by_value(out[0], 0.0, 255.0)


def _affine_matrices(seed, n, h, w, config: AugmentConfig):
  """[n, 2, 3] random output->input matrices about the centre, built vectorised."""
  s_rot, s_zoom, s_tx, s_ty, s_shear, s_flip = _sub_seeds(seed, 6)
  zeros = tf.zeros([n])

  def draw(s, limit):
    return tf.random.stateless_uniform([n], s, -limit, limit) if limit else zeros

  angle = draw(s_rot, config.rotation_deg * math.pi / 180)
  shear = tf.tan(draw(s_shear, config.shear_deg * math.pi / 180))
  zoom = 1.0 + draw(s_zoom, config.zoom)
  tx, ty = draw(s_tx, config.translate) * w, draw(s_ty, config.translate) * h
  # A horizontal flip is a mirror of the input x axis: free inside the warp.
  mirror = (tf.where(tf.random.stateless_uniform([n], s_flip) < 0.5, -1.0, 1.0)
            if config.flip else tf.ones([n]))
  cos, sin = tf.cos(angle), tf.sin(angle)
  # mirror @ rotation @ shear @ zoom, then translation; about the centre (cx, cy).
  a, b = mirror * cos * zoom, mirror * (cos * shear - sin) * zoom
  c, d = sin * zoom, (sin * shear + cos) * zoom
  cx, cy = (w - 1) / 2, (h - 1) / 2
  e = cx + mirror * tx - a * cx - b * cy
  f = cy + ty - c * cx - d * cy
  return tf.reshape(tf.stack([a, b, e, c, d, f], axis=1), [n, 2, 3])


def _warp_batch_with_opencv(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
  import cv2  # opencv-python-headless: releases the GIL, ~8x TF's kernel on CPU

  # tf.data already runs several batches in parallel: OpenCV's own thread pool on top
  # would oversubscribe the cores.
  cv2.setNumThreads(1)
  out = np.empty_like(images)
  h, w = images.shape[1:3]
  for i in range(len(images)):
    cv2.warpAffine(images[i], matrices[i], (w, h), dst=out[i],
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
  return out


def random_affine_batch(images, seed, config: AugmentConfig):
  """The affine part of `config` (and its flip) on a batch `[B, H, W, 3]`, by OpenCV.

  TensorFlow's projective-transform kernel costs ~1 ms per 128 px image on CPU (as much
  as the JPEG decode) and XLA cannot compile it; OpenCV's warpAffine does the same
  bilinear warp in ~0.13 ms. The random matrices still come from TF's stateless RNG, so
  a seed gives the same batch every time; one numpy_function call per batch keeps the
  Python overhead off the per-image path.
  """
  shape = tf.shape(images)
  matrices = _affine_matrices(seed, shape[0], tf.cast(shape[1], tf.float32),
                              tf.cast(shape[2], tf.float32), config)
  warped = tf.numpy_function(_warp_batch_with_opencv, [images, matrices], images.dtype,
                             stateful=False)
  return tf.ensure_shape(warped, images.shape)


def random_affine(image, seed, config: AugmentConfig):
  """Rotation, zoom, translation and shear of one image as one warp (OpenCV)."""
  return random_affine_batch(image[None], seed, config)[0]


def random_rotation(image, seed, max_deg: float):
  return random_affine(image, seed, AugmentConfig(rotation_deg=max_deg))


def random_zoom(image, seed, zoom: float):
  return random_affine(image, seed, AugmentConfig(zoom=zoom))


def random_translation(image, seed, fraction: float):
  return random_affine(image, seed, AugmentConfig(translate=fraction))


def random_shear(image, seed, max_deg: float):
  return random_affine(image, seed, AugmentConfig(shear_deg=max_deg))


def random_brightness(image, seed, delta: float):
  """Adds a uniform offset in [-delta, delta] x 255."""
  return tf.clip_by_value(image + _uniform(seed, -delta, delta) * 255.0, 0.0, 255.0)


def random_contrast(image, seed, amount: float):
  return tf.clip_by_value(
      tf.image.stateless_random_contrast(image, 1 - amount, 1 + amount, seed), 0.0, 255.0)


def random_saturation(image, seed, amount: float):
  return tf.clip_by_value(
      tf.image.stateless_random_saturation(image, 1 - amount, 1 + amount, seed), 0.0, 255.0)


def random_erasing(image, seed, prob: float, area=(0.02, 0.2), aspect=(0.3, 3.3)):
  """With probability `prob`, fills one random rectangle with the image's mean colour."""
  s_apply, s_area, s_aspect, s_y, s_x = _sub_seeds(seed, 5)
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  target = _uniform(s_area, *area) * h * w
  ratio = tf.exp(_uniform(s_aspect, math.log(aspect[0]), math.log(aspect[1])))
  eh = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(target * ratio)), 1, h), tf.int32)
  ew = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(target / ratio)), 1, w), tf.int32)
  y0 = tf.random.stateless_uniform([], s_y, 0, shape[0] - eh + 1, dtype=tf.int32)
  x0 = tf.random.stateless_uniform([], s_x, 0, shape[1] - ew + 1, dtype=tf.int32)
  ys, xs = tf.range(shape[0])[:, None], tf.range(shape[1])[None, :]
  inside = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
  apply = tf.random.stateless_uniform([], s_apply) < prob
  fill = tf.reduce_mean(image, axis=[0, 1])
  return tf.where(apply & inside[:, :, None], fill, image)


def augment(image, seed, config: AugmentConfig):
  """Applies every enabled op of `config` in a fixed order."""
  seeds = _sub_seeds(seed, 6)
  if config.flip:
    image = random_flip(image, seeds[0])
  if config.affine:  # the flip ran above: keep it out of the warp's matrix
    image = random_affine(image, seeds[1], dataclasses.replace(config, flip=False))
  if config.brightness:
    image = random_brightness(image, seeds[2], config.brightness)
  if config.contrast:
    image = random_contrast(image, seeds[3], config.contrast)
  if config.saturation:
    image = random_saturation(image, seeds[4], config.saturation)
  if config.erasing_prob:
    image = random_erasing(image, seeds[5], config.erasing_prob)
  return image
