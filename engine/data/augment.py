"""In-graph, seeded augmentation ops: one small op per transform.

Every op takes an image `[H, W, 3]` or a batch `[B, H, W, 3]` with values in [0, 255] and
a stateless seed (int32 `[2]`); in a batch each image gets its own draw. It returns the
same shape in the same range and works eagerly and inside tf.data.

The geometric part (flip, rotation, zoom, translation, shear) and the resize to the
output size are one matrix per image and one bilinear warp per batch, by OpenCV:
TensorFlow's CPU projective-transform kernel costs ~1 ms per 128 px image (more than the
JPEG decode), OpenCV's warpAffine ~0.1 ms, and folding the resize into the same warp
makes the whole geometric augmentation cost what a plain resize costs. Magnitudes
follow Keras' ImageDataGenerator where it has one, so the seeds' recipes port directly
(rotation and shear in degrees, shifts and zoom as fractions).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from engine.config import AugmentConfig


def _sub_seeds(seed, n: int):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _as_batch(fn):
  """Runs a batch op on a single image `[H, W, 3]` as a batch of one."""
  def wrapped(images, seed, *args, **kwargs):
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 3:
      return fn(images[None], seed, *args, **kwargs)[0]
    return fn(images, seed, *args, **kwargs)
  wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
  return wrapped


def _per_image(values):
  return values[:, None, None, None]


def _draw(seed, n, limit):
  """n uniform values in [-limit, limit] (zeros when limit is 0)."""
  if not limit:
    return tf.zeros([n])
  return tf.random.stateless_uniform([n], seed, -limit, limit)


def geometry_matrices(seed, n, output_size, config: AugmentConfig, source_size=None):
  """[n, 2, 3] random output->source pixel maps: flip, rotation, shear, zoom, shift, resize.

  The augmentation acts about the output image's centre in output pixels, as Keras'
  ImageDataGenerator does; `source_size` (H, W) adds the resize from the source, with
  half-pixel centres like `tf.image.resize` and `cv2.resize`.
  """
  out_h, out_w = (float(v) for v in output_size)
  src_h, src_w = (float(v) for v in (source_size or output_size))
  s_rot, s_zoom, s_tx, s_ty, s_shear, s_flip = _sub_seeds(seed, 6)
  angle = _draw(s_rot, n, config.rotation_deg * math.pi / 180)
  shear = tf.tan(_draw(s_shear, n, config.shear_deg * math.pi / 180))
  zoom = 1.0 + _draw(s_zoom, n, config.zoom)
  tx, ty = _draw(s_tx, n, config.translate) * out_w, _draw(s_ty, n, config.translate) * out_h
  mirror = (tf.where(tf.random.stateless_uniform([n], s_flip) < 0.5, -1.0, 1.0)
            if config.flip else tf.ones([n]))
  cos, sin = tf.cos(angle), tf.sin(angle)
  # mirror @ rotation @ shear @ zoom, then translation, about the centre (cx, cy).
  a, b = mirror * cos * zoom, mirror * (cos * shear - sin) * zoom
  c, d = sin * zoom, (sin * shear + cos) * zoom
  cx, cy = (out_w - 1) / 2, (out_h - 1) / 2
  e = cx + mirror * tx - a * cx - b * cy
  f = cy + ty - c * cx - d * cy
  # Then output pixels -> source pixels: x_src = (x + 0.5) * sx - 0.5.
  sx, sy = src_w / out_w, src_h / out_h
  rows = [sx * a, sx * b, sx * e + (0.5 * sx - 0.5), sy * c, sy * d, sy * f + (0.5 * sy - 0.5)]
  return tf.reshape(tf.stack(rows, axis=1), [n, 2, 3])


def _warp_with_opencv(images: np.ndarray, matrices: np.ndarray, out_h, out_w) -> np.ndarray:
  import cv2  # opencv-python-headless: releases the GIL, ~8x TF's kernel on CPU

  # tf.data already runs several batches in parallel: OpenCV's own thread pool on top
  # would oversubscribe the cores. Pixels from outside the image repeat the nearest edge
  # pixel: ImageDataGenerator's default fill_mode, and 25% cheaper than reflecting when a
  # rotation uncovers the corners.
  cv2.setNumThreads(1)
  out = np.empty((len(images), int(out_h), int(out_w), images.shape[-1]), images.dtype)
  for i in range(len(images)):
    cv2.warpAffine(images[i], matrices[i], (int(out_w), int(out_h)), dst=out[i],
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_REPLICATE)
  return out


def warp(images, matrices, output_size):
  """Bilinear warp of a batch `[B, H, W, C]` by output->source matrices `[B, 2, 3]`.

  One numpy_function call per batch keeps the Python overhead off the per-image path;
  uint8 stays uint8 (OpenCV rounds), float stays float.
  """
  out_h, out_w = output_size
  warped = tf.numpy_function(_warp_with_opencv, [images, tf.cast(matrices, tf.float32),
                                                 out_h, out_w], images.dtype, stateful=False)
  return tf.ensure_shape(warped, [images.shape[0], out_h, out_w, images.shape[-1]])


@_as_batch
def random_geometry(images, seed, config: AugmentConfig, output_size=None):
  """Flip and the affine part of `config`, plus a resize to `output_size`, as one warp."""
  shape = images.shape
  source_size = (shape[1], shape[2])
  if None in source_size:
    raise ValueError(f"random_geometry needs static image sizes, got {shape}")
  output_size = tuple(output_size or source_size)
  if not config.geometric and output_size == source_size:
    return images
  matrices = geometry_matrices(seed, tf.shape(images)[0], output_size, config, source_size)
  return warp(images, matrices, output_size)


@_as_batch
def random_brightness(images, seed, delta: float):
  """Adds a uniform offset in [-delta, delta] x 255 per image."""
  offset = _draw(seed, tf.shape(images)[0], delta) * 255.0
  return tf.clip_by_value(images + _per_image(offset), 0.0, 255.0)


def _factors(seed, n, amount):
  return 1.0 + _draw(seed, n, amount)


@_as_batch
def random_contrast(images, seed, amount: float):
  """Scales each channel's distance from its mean by a factor in [1 - a, 1 + a] per image."""
  factor = _per_image(_factors(seed, tf.shape(images)[0], amount))
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return tf.clip_by_value((images - mean) * factor + mean, 0.0, 255.0)


@_as_batch
def random_saturation(images, seed, amount: float):
  """Scales HSV saturation by a factor in [1 - a, 1 + a] per image."""
  factor = _factors(seed, tf.shape(images)[0], amount)
  hsv = tf.image.rgb_to_hsv(images / 255.0)
  saturation = tf.clip_by_value(hsv[..., 1] * factor[:, None, None], 0.0, 1.0)
  hsv = tf.stack([hsv[..., 0], saturation, hsv[..., 2]], axis=-1)
  return tf.clip_by_value(tf.image.hsv_to_rgb(hsv) * 255.0, 0.0, 255.0)


@_as_batch
def random_erasing(images, seed, prob: float, area=(0.02, 0.2), aspect=(0.3, 3.3)):
  """With probability `prob` per image, fills one random rectangle with its mean colour."""
  s_apply, s_area, s_aspect, s_y, s_x = _sub_seeds(seed, 5)
  shape = tf.shape(images)
  n, h, w = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  target = tf.random.stateless_uniform([n], s_area, *area) * h * w
  ratio = tf.exp(tf.random.stateless_uniform([n], s_aspect, math.log(aspect[0]),
                                             math.log(aspect[1])))
  eh = tf.clip_by_value(tf.round(tf.sqrt(target * ratio)), 1, h)
  ew = tf.clip_by_value(tf.round(tf.sqrt(target / ratio)), 1, w)
  # Uniform top-left corners over the positions where the rectangle fits.
  y0 = tf.floor(tf.random.stateless_uniform([n], s_y) * (h - eh + 1))
  x0 = tf.floor(tf.random.stateless_uniform([n], s_x) * (w - ew + 1))
  ys = tf.range(h)[None, :, None]
  xs = tf.range(w)[None, None, :]
  inside = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None]) &
            (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
  apply = tf.random.stateless_uniform([n], s_apply) < prob
  fill = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return tf.where(_per_image(apply) & inside[..., None], fill, images)


@_as_batch
def random_photometric(images, seed, config: AugmentConfig):
  """Brightness, contrast, saturation, then erasing, in float; returns the input dtype."""
  if not config.photometric:
    return images
  dtype = images.dtype
  x = tf.cast(images, tf.float32)
  seeds = _sub_seeds(seed, 4)
  if config.brightness:
    x = random_brightness(x, seeds[0], config.brightness)
  if config.contrast:
    x = random_contrast(x, seeds[1], config.contrast)
  if config.saturation:
    x = random_saturation(x, seeds[2], config.saturation)
  if config.erasing_prob:
    x = random_erasing(x, seeds[3], config.erasing_prob)
  if dtype.is_integer:
    x = tf.round(x)
  return tf.cast(x, dtype)


@_as_batch
def augment(images, seed, config: AugmentConfig, output_size=None):
  """Every enabled op of `config`: one warp (with the resize to `output_size`), then the
  photometric ops and erasing. Batches `[B, H, W, 3]` (the pipeline) or one image."""
  s_geometry, s_photometric = _sub_seeds(seed, 2)
  images = random_geometry(images, s_geometry, config, output_size)
  return random_photometric(images, s_photometric, config)
