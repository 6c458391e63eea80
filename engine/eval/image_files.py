"""Reading the image files a user points predict at: folders expanded, headers checked
before decoding, JPEGs decoded as the input pipeline decodes them, photos turned upright.

A file that cannot be used is a ValueError naming it and why, so a caller can report it and
go on with the others.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError  # installed with tensorboard

from engine.config import MAX_IMAGE_PIXELS
from engine.data import schema
from engine.data.sharding.jpeg import jpeg_orientation, jpeg_problem, jpeg_size, upright

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def expand_inputs(inputs: tuple[str, ...]) -> list[tuple[str, str | None]]:
  """Files to predict, as (path, error): folders expand to their sorted images."""
  entries = []
  for path in inputs:
    if os.path.isdir(path):
      images = sorted(os.path.join(path, name) for name in os.listdir(path)
                      if name.lower().endswith(schema.IMAGE_EXTENSIONS)
                      and os.path.isfile(os.path.join(path, name)))
      if not images:
        entries.append((path, f"{path}: folder has no images "
                                f"({', '.join(schema.IMAGE_EXTENSIONS)})"))
      entries.extend((image, None) for image in images)
    elif os.path.isfile(path):
      entries.append((path, None))
    else:
      entries.append((path, f"{path}: no such file or folder"))
  return entries


def load_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """Reads an image file as upright RGB uint8 [H, W, 3].

  The size in the file's header is checked before anything is decoded, so a huge (or
  lying) header cannot take the memory. JPEGs are decoded by `tf.io.decode_jpeg` with
  the input pipeline's settings: its default (fast integer) DCT differs from OpenCV's and
  Pillow's by up to ~8 levels per pixel, a skew between training and prediction. Other
  formats go through OpenCV, then Pillow. The EXIF orientation is applied (the sharder
  stores such photos upright too), so a phone photo is seen the way its owner sees it.

  Raises:
    ValueError: the file is empty, too large, or not an image that can be decoded (the
      message names the file and why).
  """
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise ValueError(f"{path}: not a readable image: empty file (0 bytes)")
  _check_pixels(path, header_size(path, data), max_pixels)
  if data[:3] == _JPEG_MAGIC:
    try:
      image = tf.io.decode_jpeg(data, channels=3).numpy()
    except tf.errors.InvalidArgumentError:
      raise ValueError(f"{path}: not a readable image: "
                       f"{jpeg_problem(data) or 'corrupt JPEG (TensorFlow cannot decode it)'}"
                       ) from None
    return upright(image, jpeg_orientation(data))
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is not None:  # OpenCV applies the EXIF orientation itself
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  try:  # formats this OpenCV build lacks
    with Image.open(io.BytesIO(data)) as pil:
      return np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
  except UnidentifiedImageError:
    raise ValueError(f"{path}: not a readable image: not in an image format OpenCV or Pillow "
                     "knows") from None
  except Exception as e:  # Pillow raises many types for a bad file
    raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def header_size(path: str, data: bytes) -> tuple[int, int] | None:
  """(height, width) as the file's header states it, without decoding; None if unknown.

  Raises:
    ValueError: Pillow refuses the header as a decompression bomb (over twice its
      MAX_IMAGE_PIXELS), which is over MAX_IMAGE_PIXELS too.
  """
  if data[:3] == _JPEG_MAGIC:
    return jpeg_size(data)
  if data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR":  # the first chunk, by the PNG spec
    width, height = struct.unpack(">II", data[16:24])
    return height, width
  try:
    with warnings.catch_warnings():  # the size limit is ours (max_pixels), not Pillow's
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as pil:  # reads the header only
        return pil.height, pil.width
  except Image.DecompressionBombError as e:
    raise ValueError(f"{path}: too large to decode ({e})") from None
  except Exception:  # not an image Pillow knows: the decoders below say so
    return None


def _check_pixels(path: str, size: tuple[int, int] | None, max_pixels: int) -> None:
  if size and size[0] * size[1] > max_pixels:
    height, width = size
    raise ValueError(f"{path}: {width}x{height} pixels ({width * height / 1e6:.1f} MP) is over "
                     f"the limit of {max_pixels:,} pixels (max_image_pixels); downscale it first")
