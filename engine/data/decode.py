"""Decoding a stored JPEG: DCT-scaled or cropped in the decoder, resized, in the output dtype.

Shared by the input pipeline and prediction, so both cut and resize the same pixels.
"""

from __future__ import annotations

import tensorflow as tf

from engine.config import InputConfig


def decode_ratio(config: InputConfig, manifest: dict) -> int:
  """JPEG DCT scaling (1/2/4/8) when stored images are much larger than the target."""
  shape = manifest.get("image_shape")
  if not shape or config.crop_box is not None or config.augment.random_resized_crop and \
      config.training:
    return 1
  ratio = 1
  while ratio < 8 and min(shape[0] / (ratio * 2) / config.image_size[0],
                          shape[1] / (ratio * 2) / config.image_size[1]) >= 1.0:
    ratio *= 2
  return ratio


def crop_window(image_shape, crop_box) -> tf.Tensor:
  """[top, left, height, width] pixels of `crop_box` (fractions) in an image of image_shape.

  Shared by the pipeline (fused decode_and_crop_jpeg) and prediction (crop of a decoded
  image), so both cut exactly the same pixels.
  """
  h, w = tf.cast(image_shape[0], tf.float32), tf.cast(image_shape[1], tf.float32)
  top, left, height, width = crop_box
  window = tf.round(tf.stack([top * h, left * w, height * h, width * w]))
  return tf.maximum(tf.cast(window, tf.int32), [0, 0, 1, 1])


def warps_from_frame(config: InputConfig) -> bool:
  """Training warps from the whole stored frame onto the crop box (`warp_from_frame`)."""
  return config.training and config.warp_from_frame and config.crop_box is not None


def _decodes_box_only(config: InputConfig) -> bool:
  """The decoder cuts the crop box (fused), unless training warps from the whole frame."""
  return config.crop_box is not None and not warps_from_frame(config)


def decode_jpeg(encoded, config: InputConfig, ratio: int):
  if _decodes_box_only(config):  # fused: only the box is decoded
    window = crop_window(tf.image.extract_jpeg_shape(encoded), config.crop_box)
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
  return tf.io.decode_jpeg(encoded, channels=3, ratio=ratio)


def decode_resized(encoded, seed, config: InputConfig, ratio: int):
  """Encoded JPEG -> float32 [H, W, 3] at config.image_size, in [0, 255].

  The per-example resize, for images that cannot be batched at their decoded size
  (mixed sizes, a random resized crop) and for evaluation.
  """
  if config.training and config.augment.random_resized_crop:
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=config.augment.crop_scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)  # fused: decodes only the crop
  else:
    image = decode_jpeg(encoded, config, ratio)
  # Bilinear without antialiasing: CelebA's 218x178 -> 128 px is a mild downscale, and
  # the antialiased kernel costs 50% more than the decode-ceiling's plain resize.
  image = tf.image.resize(image, config.image_size, method="bilinear")
  image.set_shape([*config.image_size, 3])
  return image


def decoded_size(config: InputConfig, manifest: dict, ratio: int) -> tuple[int, int] | None:
  """The (H, W) every training image decodes to, if it is one size; else None.

  Such images are batched straight after the decode, and one warp per batch does the
  resize together with the geometric augmentation: cheaper than a per-example resize.
  """
  shape = manifest.get("image_shape")
  if not config.training or not shape or config.augment.random_resized_crop:
    return None
  if _decodes_box_only(config):
    return tuple(static_crop_window(shape, config.crop_box)[2:])
  return -(-shape[0] // ratio), -(-shape[1] // ratio)  # libjpeg rounds scaled sizes up


def static_crop_window(shape, crop_box) -> tuple[int, int, int, int]:
  """`crop_window` of a known image shape as Python ints, computed once (also while a
  tf.function or a tf.data map is being traced)."""
  with tf.init_scope():  # the same rounding as the in-graph crop
    return tuple(int(v) for v in crop_window(shape, crop_box).numpy())


def warp_window(config: InputConfig, decoded_hw) -> tuple[int, int, int, int] | None:
  """The crop box's [top, left, height, width] in the decoded training frame, which the
  augmentation warp maps its output onto, with `warp_from_frame`; None when the decoded
  image is the crop (or the whole image) already."""
  if not warps_from_frame(config):
    return None
  return static_crop_window(tuple(decoded_hw), config.crop_box)


def to_output_dtype(image, dtype: tf.DType):
  """Pixels in [0, 255] -> `dtype`; uint8 rounds to the nearest level and clips."""
  if dtype == tf.uint8 and image.dtype != tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.cast(image, dtype)


def crop_and_resize_fn(image_size: tuple[int, int], output_dtype: str, crop_box=None):
  """Image -> the run's crop, size and input dtype, as the evaluation pipeline
  decodes it (prediction and the export check use this for files outside the shards)."""
  dtype = tf.as_dtype(output_dtype)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def resize(image):
    if crop_box is not None:
      top, left, height, width = tf.unstack(crop_window(tf.shape(image), crop_box))
      image = tf.image.crop_to_bounding_box(image, top, left, height, width)
    image = to_output_dtype(tf.image.resize(image, image_size, method="bilinear"), dtype)
    return image if dtype == tf.uint8 else tf.cast(image, tf.float32)  # the pipeline's rounding

  return resize
