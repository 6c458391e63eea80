"""Synthetic faces in CelebA's own file format, with a learnable signal.

Used by the quickstart, the tests and the benchmarks, so that everything runs on a
fresh clone without CelebA. The drawings are crude but the labels are real functions
of the pixels: `Male` adds a beard band and short hair, `Eyeglasses` dark lenses,
`Smiling` a wide mouth, `Young` smoother skin; each identity has its own skin tone and
background. Noise and jitter keep the task from being trivial.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

ATTRIBUTE_NAMES = ("Eyeglasses", "Male", "Smiling", "Young")
# CelebA's partition codes.
PARTITION_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What to generate.

  Attributes:
    output_dir: where the CelebA-format tree is written.
    num_examples: counts per split, in CelebA's split order.
    image_size: (height, width); CelebA's aligned crops are (218, 178).
    num_identities: identities, split-disjoint like CelebA's official partition.
    seed: everything drawn from it.
    with_landmarks: also write list_landmarks_align_celeba.txt.
  """

  output_dir: str
  num_examples: dict[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 96, "validation": 32, "test": 32})
  image_size: tuple[int, int] = (54, 44)
  num_identities: int = 24
  seed: int = 0
  with_landmarks: bool = True


def _draw_face(rng: np.random.Generator, h: int, w: int, attrs: dict[str, bool],
               identity: int) -> tuple[np.ndarray, list[int]]:
  """Draws one face; returns the uint8 image and its 10 landmark coordinates."""
  id_rng = np.random.default_rng(identity)
  background = id_rng.uniform(40, 215, size=3)
  skin = id_rng.uniform(120, 230, size=3) * np.array([1.0, 0.85, 0.75])
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  cy = h * (0.52 + rng.uniform(-0.03, 0.03))
  cx = w * (0.5 + rng.uniform(-0.03, 0.03))
  ry, rx = h * 0.36, w * 0.34
  img = np.broadcast_to(background, (h, w, 3)).astype(np.float32).copy()
  face = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
  img[face] = skin
  hair_bottom = cy - ry * (0.55 if attrs["Male"] else 0.2)
  hair = (yy < hair_bottom) & (np.abs(xx - cx) < rx * 1.15) & (yy > cy - ry * 1.25)
  if not attrs["Male"]:  # long hair down the sides
    hair |= (np.abs(np.abs(xx - cx) - rx * 1.05) < rx * 0.2) & (yy < cy + ry * 0.9)
  img[hair] = id_rng.uniform(10, 90, size=3)
  if attrs["Male"]:
    beard = face & (yy > cy + ry * 0.35)
    img[beard] *= 0.55
  eye_y = cy - ry * 0.15
  eyes = [(cx - rx * 0.4, eye_y), (cx + rx * 0.4, eye_y)]
  for ex, ey in eyes:
    size = 0.16 if attrs["Eyeglasses"] else 0.07
    lens = (np.abs(xx - ex) < rx * size * 1.4) & (np.abs(yy - ey) < ry * size)
    img[lens] = 15.0 if attrs["Eyeglasses"] else 40.0
  nose = (cx, cy + ry * 0.1)
  mouth_y = cy + ry * 0.45
  mouth_half = rx * (0.45 if attrs["Smiling"] else 0.22)
  mouth = (np.abs(xx - cx) < mouth_half) & (np.abs(yy - mouth_y) < ry * 0.05)
  img[mouth] = (160.0, 40.0, 50.0)
  noise = 6.0 if attrs["Young"] else 22.0
  img += rng.normal(0, noise, size=img.shape)
  img *= rng.uniform(0.85, 1.15)  # lighting
  landmarks = [eyes[0][0], eyes[0][1], eyes[1][0], eyes[1][1], nose[0], nose[1],
               cx - mouth_half, mouth_y, cx + mouth_half, mouth_y]
  return np.clip(img, 0, 255).astype(np.uint8), [int(round(v)) for v in landmarks]


def _identity_ranges(config: SyntheticConfig) -> dict[str, np.ndarray]:
  """Splits identities 1..N across splits in proportion to their sizes (disjoint)."""
  total = sum(config.num_examples.values())
  ids, start, ranges = np.arange(1, config.num_identities + 1), 0, {}
  for split, count in config.num_examples.items():
    n = max(1, round(config.num_identities * count / total))
    ranges[split] = ids[start:start + n] if start + n <= len(ids) else ids[-n:]
    start += n
  return ranges


def write_synthetic_celeba(config: SyntheticConfig) -> str:
  """Writes img_align_celeba/ and CelebA's four annotation files; returns the dir."""
  import tensorflow as tf  # heavy import kept local: the sharder imports this module

  rng = np.random.default_rng(config.seed)
  image_dir = os.path.join(config.output_dir, "img_align_celeba")
  os.makedirs(image_dir, exist_ok=True)
  h, w = config.image_size
  attr_rows, part_rows, id_rows, lm_rows = [], [], [], []
  ranges = _identity_ranges(config)
  index = 0
  for split, count in config.num_examples.items():
    for _ in range(count):
      index += 1
      name = f"{index:06d}.jpg"
      attrs = {a: bool(rng.random() < 0.45) for a in ATTRIBUTE_NAMES}
      identity = int(rng.choice(ranges[split]))
      image, landmarks = _draw_face(rng, h, w, attrs, identity)
      jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
      with open(os.path.join(image_dir, name), "wb") as f:
        f.write(jpeg)
      attr_rows.append(name + " " + " ".join(" 1" if attrs[a] else "-1" for a in ATTRIBUTE_NAMES))
      part_rows.append(f"{name} {PARTITION_CODES[split]}")
      id_rows.append(f"{name} {identity}")
      lm_rows.append(name + " " + " ".join(f"{v:4d}" for v in landmarks))

  def write(file_name: str, lines: list[str]) -> None:
    with open(os.path.join(config.output_dir, file_name), "w") as f:
      f.write("\n".join(lines) + "\n")

  write("list_attr_celeba.txt", [str(index), " ".join(ATTRIBUTE_NAMES)] + attr_rows)
  write("list_eval_partition.txt", part_rows)
  write("identity_CelebA.txt", id_rows)
  if config.with_landmarks:
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    write("list_landmarks_align_celeba.txt", [str(index), header] + lm_rows)
  return config.output_dir
