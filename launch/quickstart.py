"""The embedded default job: synthetic CelebA-format faces -> shards -> manifest.

  python -m launch.quickstart [--work_dir=runs/quickstart]

Runs on a fresh clone with no data: it writes a small CelebA-format directory of
synthetic faces (real JPEGs, a learnable gender signal), shards it, and prints the
manifest. Later stages (training, evaluation) extend this same command.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from engine.data.sharding import ShardConfig, shard_dataset
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba

_WORK_DIR = flags.DEFINE_string("work_dir", "runs/quickstart", "Where data and shards go.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1600, "Synthetic training faces.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "Synthetic validation and test faces, each.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data.")


def main(argv: list[str]) -> None:
  del argv
  celeba_dir = os.path.join(_WORK_DIR.value, "celeba")
  if not os.path.exists(os.path.join(celeba_dir, "list_attr_celeba.txt")):
    logging.info("writing synthetic CelebA-format faces to %s", celeba_dir)
    write_synthetic_celeba(SyntheticConfig(
        celeba_dir, image_size=(109, 89), num_identities=200, seed=_SEED.value,
        num_examples={"train": _NUM_TRAIN.value, "validation": _NUM_EVAL.value,
                      "test": _NUM_EVAL.value}))
  shards_dir = os.path.join(_WORK_DIR.value, "shards")
  manifest = shard_dataset(ShardConfig("celeba", celeba_dir, shards_dir, num_shards=8))
  summary = {
      "shards_dir": shards_dir,
      "splits": {s: {"num_examples": v["num_examples"], "shards": len(v["shards"]),
                     "Male": v["class_counts"]["Male"]} for s, v in manifest["splits"].items()},
      "attribute_names": manifest["attribute_names"],
      "image_shape": manifest["image_shape"],
      "throughput": manifest["throughput"],
  }
  print(json.dumps(summary, indent=2))
  print(f"\nfull manifest: {os.path.join(shards_dir, 'manifest.json')}")


if __name__ == "__main__":
  app.run(main)
