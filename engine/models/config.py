"""The model's typed configuration."""

from __future__ import annotations

import dataclasses

FINETUNE_POLICIES = ("frozen", "last_n", "full", "scratch")
BATCH_NORMS = ("fused", "keras")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """What to build; see docs/DESIGN.md.

  Attributes:
    backbone: a registered backbone name (`python -m launch.models` lists them).
    head: a registered head name: linear, deep or mlp.
    num_outputs: 1 (binary, a logit for BCE), K (softmax CE) or A (multi-label).
    image_size: (height, width) of the input.
    finetune: frozen | last_n | full | scratch.
    finetune_last_n: layers unfrozen by `last_n`.
    weights: none | imagenet | a path to our checkpoint or a .weights.h5 file.
    weights_path: a local ImageNet weights file (offline use of `imagenet`).
    dropout: the head's dropout rate (mlp, deep).
    batch_norm: fused (TensorFlow's fused kernel) or keras (stock, for comparisons).
    bn_momentum: > 0 sets every batch-norm layer's moving-average momentum; 0 keeps the
      architecture's own (keras.applications' MobileNetV3 uses 0.999: its moving statistics
      need thousands of steps, too slow for a short from-scratch run).
  """

  backbone: str = "resnet18"
  head: str = "linear"
  num_outputs: int = 1
  image_size: tuple[int, int] = (128, 128)
  finetune: str = "scratch"
  finetune_last_n: int = 20
  weights: str = "none"
  weights_path: str | None = None
  dropout: float = 0.0
  batch_norm: str = "fused"
  bn_momentum: float = 0.0

  def validate(self) -> "ModelConfig":
    if self.finetune not in FINETUNE_POLICIES:
      raise ValueError(f"unknown finetune {self.finetune!r}; known: {', '.join(FINETUNE_POLICIES)}")
    if self.batch_norm not in BATCH_NORMS:
      raise ValueError(f"unknown batch_norm {self.batch_norm!r}; known: {', '.join(BATCH_NORMS)}")
    if self.num_outputs < 1:
      raise ValueError(f"num_outputs must be >= 1, got {self.num_outputs}")
    if min(self.image_size) < 16:
      raise ValueError(f"image_size must be at least 16x16, got {self.image_size}")
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.finetune == "scratch" and self.weights not in ("none", ""):
      raise ValueError(f"finetune=scratch trains from random init; it contradicts weights={self.weights!r}")
    return self
