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


def geometry_matrices(seed, n, output_size, config: AugmentConfig, source_size=None,
                      source_window=None):
  """[n, 2, 3] random output->source pixel maps: flip, rotation, shear, zoom, shift, resize.

  The augmentation acts about the output image's centre in output pixels, as Keras'
  ImageDataGenerator does; `source_size` (H, W) adds the resize from the source, with
  half-pixel centres like `tf.image.resize` and `cv2.resize`. `source_window` (top, left,
  height, width) in source pixels maps the output onto that part of the source instead
  (a crop inside a larger frame, whose pixels beyond the window a zoom-out then shows).
  """
  out_h, out_w = (float(v) for v in output_size)
  top, left, src_h, src_w = (float(v) for v in (
      source_window or (0, 0, *(source_size or output_size))))
  s_rot, s_zoom, s_tx, s_ty, s_shear, s_flip = _sub_seeds(seed, 6)
  angle = _draw(s_rot, n, config.rotation_deg * math.pi / 180)
  shear = tf.tan(_draw(s_shear, n, config.shear_deg * math.pi / 180))
  if config.zoom_range:
    zoom = tf.random.stateless_uniform([n], s_zoom, *(float(v) for v in config.zoom_range))
  else:  # the float form, drawn as it always was (a resumed run draws the same numbers)
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
  rows = [sx * a, sx * b, sx * e + (0.5 * sx - 0.5 + left),
          sy * c, sy * d, sy * f + (0.5 * sy - 0.5 + top)]
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


def _source_and_output_size(images, output_size):
  source_size = (images.shape[1], images.shape[2])
  if None in source_size:
    raise ValueError(f"augmentation needs static image sizes, got {images.shape}")
  return source_size, tuple(output_size or source_size)


@_as_batch
def random_geometry(images, seed, config: AugmentConfig, output_size=None, warp_fn=warp):
  """Flip and the affine part of `config`, plus a resize to `output_size`, as one warp.

  `warp_fn(images, matrices, output_size)` does the sampling: OpenCV on the host (`warp`),
  or pure TensorFlow that XLA compiles (`engine.data.device_augment.bilinear_warp`).
  """
  source_size, output_size = _source_and_output_size(images, output_size)
  if not config.geometric and output_size == source_size:
    return images
  matrices = geometry_matrices(seed, tf.shape(images)[0], output_size, config, source_size)
  return warp_fn(images, matrices, output_size)


# Photometric ops and erasing: each draws its per-image values (`*_params`, from a seed)
# apart from applying them (`apply_*`), so the values can be drawn in the input pipeline
# and applied on the device: XLA's stateless random kernels draw other numbers than
# TensorFlow's from the same seed, and both paths must draw the same.


def _factors(seed, n, amount):
  return 1.0 + _draw(seed, n, amount)


def apply_brightness(images, offsets):
  return tf.clip_by_value(images + _per_image(offsets), 0.0, 255.0)


def apply_contrast(images, factors):
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return tf.clip_by_value((images - mean) * _per_image(factors) + mean, 0.0, 255.0)


def apply_saturation(images, factors):
  hsv = tf.image.rgb_to_hsv(images / 255.0)
  saturation = tf.clip_by_value(hsv[..., 1] * factors[:, None, None], 0.0, 1.0)
  hsv = tf.stack([hsv[..., 0], saturation, hsv[..., 2]], axis=-1)
  return tf.clip_by_value(tf.image.hsv_to_rgb(hsv) * 255.0, 0.0, 255.0)


def erasing_boxes(seed, n, size, prob: float, area=(0.02, 0.2), aspect=(0.3, 3.3)):
  """[n, 4] rectangles (top, left, height, width) in pixels of a `size` image; height 0
  where an image (with probability 1 - prob) is not erased."""
  s_apply, s_area, s_aspect, s_y, s_x = _sub_seeds(seed, 5)
  h, w = (float(v) for v in size)
  target = tf.random.stateless_uniform([n], s_area, *area) * h * w
  ratio = tf.exp(tf.random.stateless_uniform([n], s_aspect, math.log(aspect[0]),
                                             math.log(aspect[1])))
  eh = tf.clip_by_value(tf.round(tf.sqrt(target * ratio)), 1, h)
  ew = tf.clip_by_value(tf.round(tf.sqrt(target / ratio)), 1, w)
  # Uniform top-left corners over the positions where the rectangle fits.
  y0 = tf.floor(tf.random.stateless_uniform([n], s_y) * (h - eh + 1))
  x0 = tf.floor(tf.random.stateless_uniform([n], s_x) * (w - ew + 1))
  apply = tf.random.stateless_uniform([n], s_apply) < prob
  return tf.stack([y0, x0, tf.where(apply, eh, 0.0), ew], axis=1)


def apply_erasing(images, boxes):
  """Fills each image's rectangle with the image's mean colour."""
  y0, x0, eh, ew = (boxes[:, i, None, None] for i in range(4))
  ys = tf.range(images.shape[1], dtype=tf.float32)[None, :, None]
  xs = tf.range(images.shape[2], dtype=tf.float32)[None, None, :]
  inside = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
  fill = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return tf.where(inside[..., None], fill, images)


@_as_batch
def random_brightness(images, seed, delta: float):
  """Adds a uniform offset in [-delta, delta] x 255 per image."""
  return apply_brightness(images, _draw(seed, tf.shape(images)[0], delta) * 255.0)


@_as_batch
def random_contrast(images, seed, amount: float):
  """Scales each channel's distance from its mean by a factor in [1 - a, 1 + a] per image."""
  return apply_contrast(images, _factors(seed, tf.shape(images)[0], amount))


@_as_batch
def random_saturation(images, seed, amount: float):
  """Scales HSV saturation by a factor in [1 - a, 1 + a] per image."""
  return apply_saturation(images, _factors(seed, tf.shape(images)[0], amount))


@_as_batch
def random_erasing(images, seed, prob: float, area=(0.02, 0.2), aspect=(0.3, 3.3)):
  """With probability `prob` per image, fills one random rectangle with its mean colour."""
  size = _source_and_output_size(images, None)[0]
  return apply_erasing(images, erasing_boxes(seed, tf.shape(images)[0], size, prob, area, aspect))


def photometric_params(seed, n, size, config: AugmentConfig) -> dict:
  """The per-image values of every enabled photometric op for n images of `size`."""
  seeds = _sub_seeds(seed, 4)
  params = {}
  if config.brightness:
    params["brightness"] = _draw(seeds[0], n, config.brightness) * 255.0
  if config.contrast:
    params["contrast"] = _factors(seeds[1], n, config.contrast)
  if config.saturation:
    params["saturation"] = _factors(seeds[2], n, config.saturation)
  if config.erasing_prob:
    params["erasing"] = erasing_boxes(seeds[3], n, size, config.erasing_prob)
  return params


_APPLY_PHOTOMETRIC = (("brightness", apply_brightness), ("contrast", apply_contrast),
                      ("saturation", apply_saturation), ("erasing", apply_erasing))


def apply_photometric(images, params: dict):
  """Brightness, contrast, saturation, then erasing, in float; returns the input dtype."""
  if not params:
    return images
  dtype = images.dtype
  x = tf.cast(images, tf.float32)
  for name, apply_op in _APPLY_PHOTOMETRIC:
    if name in params:
      x = apply_op(x, params[name])
  if dtype.is_integer:
    x = tf.round(x)
  return tf.cast(x, dtype)


@_as_batch
def random_photometric(images, seed, config: AugmentConfig):
  """Brightness, contrast, saturation, then erasing, in float; returns the input dtype."""
  size = _source_and_output_size(images, None)[0]
  return apply_photometric(images, photometric_params(seed, tf.shape(images)[0], size, config))


def augment_params(seed, n, config: AugmentConfig, output_size, source_size,
                   source_window=None) -> dict:
  """Every per-image value `augment` draws for n images: the warp's output->source maps
  (when anything moves, resizes or crops: `source_window`, see `geometry_matrices`) and
  the photometric values."""
  s_geometry, s_photometric = _sub_seeds(seed, 2)
  params = {}
  if config.geometric or tuple(output_size) != tuple(source_size) or source_window:
    params["matrices"] = geometry_matrices(s_geometry, n, output_size, config, source_size,
                                           source_window)
  params.update(photometric_params(s_photometric, n, output_size, config))
  return params


def apply_augment(images, params: dict, output_size, warp_fn=warp):
  """The warp (when `params` has matrices), then the photometric ops, as `params` say."""
  if "matrices" in params:
    images = warp_fn(images, params["matrices"], tuple(output_size))
  return apply_photometric(images, params)


@_as_batch
def augment(images, seed, config: AugmentConfig, output_size=None, source_window=None):
  """Every enabled op of `config`: one warp (with the resize to `output_size`, from
  `source_window` when given), then the photometric ops and erasing. Batches
  `[B, H, W, 3]` (the pipeline) or one image.

  The host path; the device path (device_augment.py) applies the same `augment_params`,
  drawn from the same batch seed in the input pipeline.
  """
  source_size, output_size = _source_and_output_size(images, output_size)
  params = augment_params(seed, tf.shape(images)[0], config, output_size, source_size,
                          source_window)
  return apply_augment(images, params, output_size)
