"""Lists the registered backbones and heads.

  python -m launch.models [--backbones=resnet18,vgg11] [--image_size=128,128] [--json]

`trainable` is the from-scratch count: convs feeding only a batch norm have no bias there.
Where ImageNet weights keep those biases, the last column gives that layout's count.
"""

from __future__ import annotations

import json

from absl import flags

from engine.models.catalog import describe_zoo
from launch import usage

_BACKBONES = flags.DEFINE_list("backbones", None, "Only these (default: all).")
_IMAGE_SIZE = flags.DEFINE_list("image_size", None, "H,W for params/FLOPs (default: each "
                                "backbone's own).")
_JSON = flags.DEFINE_bool("json", False, "Print JSON for machines.")


def _imagenet(backbone: dict) -> str:
  """'no', or 'yes' with the ImageNet layout's count where it differs (conv biases kept)."""
  if not backbone["imagenet_weights"]:
    return "no"
  if backbone["imagenet_trainable_params"] == backbone["trainable_params"]:
    return "yes"
  return f"yes ({backbone['imagenet_trainable_params']:,}: conv biases before BN kept)"


def main(argv: list[str]) -> None:
  del argv
  size = tuple(int(v) for v in _IMAGE_SIZE.value) if _IMAGE_SIZE.value else None
  zoo = describe_zoo(_BACKBONES.value, size)
  if _JSON.value:
    print(json.dumps(zoo, indent=2))
    return
  print(f"{'backbone':<22}{'size':>9}{'trainable':>13}{'total':>13}{'GFLOPs':>9}  "
        f"{'preprocessing':<14}{'imagenet (its trainable params)'}")
  for b in zoo["backbones"]:
    size_text = "x".join(map(str, b["image_size"]))
    print(f"{b['backbone']:<22}{size_text:>9}{b['trainable_params']:>13,}{b['total_params']:>13,}"
          f"{b['gflops']:>9.2f}  {b['preprocessing']:<14}{_imagenet(b)}")
  print(f"\nheads: {', '.join(zoo['heads'])}")


if __name__ == "__main__":
  usage.run(main)
