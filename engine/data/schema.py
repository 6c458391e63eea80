"""Feature keys and TFDS feature specs shared by the sharder and the input pipeline.

Names follow TFDS's own `celeb_a` builder (`image`, `attributes/<Name>` booleans,
`landmarks/<name>` ints) plus `identity` and `file_name`, so a shard directory loads
with `tfds.builder_from_directory` and feels familiar to TFDS users. Image-folder
datasets use `label` (a `ClassLabel`) instead of attributes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# tensorflow_datasets (a third of a second to import) is imported by the three functions
# that build feature specs: the keys and names above are read by code that must start fast
# (a launcher checking its paths before TensorFlow loads).

IMAGE = "image"
FILE_NAME = "file_name"
ATTRIBUTES = "attributes"
IDENTITY = "identity"
LANDMARKS = "landmarks"
LABEL = "label"

# Column order of CelebA's list_landmarks_align_celeba.txt (and TFDS celeb_a's names).
LANDMARK_NAMES = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)

# TFDS file naming: {DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
MANIFEST = "manifest.json"
# Image files read from folders: by the sharder (image-folder sets) and by launch.predict.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def flat_key(group: str, name: str) -> str:
  """The tf.Example key of a nested feature, e.g. ('attributes', 'Male')."""
  return f"{group}/{name}"


def _image(image_shape: Sequence[int | None] | None) -> tfds.features.Image:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  shape = tuple(image_shape) if image_shape else (None, None, 3)
  return tfds.features.Image(shape=shape, encoding_format="jpeg")


def celeba_features(
    attribute_names: Sequence[str],
    has_identity: bool,
    has_landmarks: bool,
    image_shape: Sequence[int | None] | None = None,
) -> tfds.features.FeaturesDict:
  """The feature spec of a CelebA-format shard set."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = {
      IMAGE: _image(image_shape),
      FILE_NAME: tfds.features.Text(),
      ATTRIBUTES: tfds.features.FeaturesDict({n: np.bool_ for n in attribute_names}),
  }
  if has_identity:
    spec[IDENTITY] = np.int64
  if has_landmarks:
    spec[LANDMARKS] = tfds.features.FeaturesDict({n: np.int64 for n in LANDMARK_NAMES})
  return tfds.features.FeaturesDict(spec)


def folder_features(
    class_names: Sequence[str], image_shape: Sequence[int | None] | None = None
) -> tfds.features.FeaturesDict:
  """The feature spec of an image-folder shard set (one class per sub-folder)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      IMAGE: _image(image_shape),
      FILE_NAME: tfds.features.Text(),
      LABEL: tfds.features.ClassLabel(names=list(class_names)),
  })
