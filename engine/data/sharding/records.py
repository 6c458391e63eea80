"""The source-independent description of one example to shard."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SourceRecord:
  """One image and its annotations, before its bytes are read.

  Attributes:
    path: the image file.
    file_name: the name stored in the example (CelebA's `NNNNNN.jpg`, or the
      path relative to the folder source's root).
    split: train / validation / test.
    where: "file:line" of the annotation that introduced it, for error messages.
    features: the example's non-image features, in the schema's nested form.
  """

  path: str
  file_name: str
  split: str
  where: str
  features: dict
