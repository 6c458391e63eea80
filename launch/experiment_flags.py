"""The training flags and their translation into one frozen ExperimentConfig.

Override order (written down once): dataclass defaults -> flagfile(s), nested ones
first, in the order given -> flags on the command line. absl applies the last value
of a flag it sees, which is exactly this order.
"""

from __future__ import annotations

import os

from absl import flags

from engine.config import AugmentConfig, ExperimentConfig, InputConfig, ModelConfig, TrainConfig

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

_T, _I, _M, _A = TrainConfig(), InputConfig(data_dir=""), ModelConfig(), AugmentConfig()
F = flags.FLAGS

# Input.
flags.DEFINE_string("data_dir", None, "Shard directory (python -m tfrecords.shard writes it).")
flags.DEFINE_string("task", _I.task, "What to learn (engine/tasks.py): attribute (one binary "
                    "attribute), identity (multi-class), attributes (multi-label).")
flags.DEFINE_string("label_attribute", _I.label_attribute, "Attribute for task=attribute.")
flags.DEFINE_integer("image_size", _I.image_size[0], "Square input size in pixels.")
flags.DEFINE_string("batch_size", str(_I.global_batch_size),
                    "Global batch size, or 'auto' (largest that fits the device).")
flags.DEFINE_string("cache", _I.cache, "auto | decoded | memory (encoded bytes) | none | a file path (encoded bytes).")
flags.DEFINE_enum("balance", _I.balance, ["none", "resample"], "Balanced class sampling.")
flags.DEFINE_string("tf_data_service", None, "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(python -m launch.data_service): the training input then runs on its "
                    "workers; evaluation stays local.")
flags.DEFINE_string("eval_split", "validation", "Split evaluated during training.")
flags.DEFINE_enum("on_bad_record", _I.on_bad_record, ["error", "skip"],
                  "An unreadable record: error (names the shard and record) or skip (drops it "
                  "and the rest of its shard, logged).")
flags.DEFINE_enum("verify_shards", _I.verify_shards, ["fast", "full", "off"],
                  "Check the shards against manifest.json before training: fast (sizes and "
                  "each file's ends), full (SHA-256 of every byte) or off.")
flags.DEFINE_list("crop_box", None, "top,left,height,width fractions of each image to keep "
                  "before resizing (e.g. the face in CelebA's 178x218 aligned crops).")
flags.DEFINE_bool("warp_from_frame", _I.warp_from_frame, "Training's augmentation warp samples "
                  "the whole stored frame around --crop_box, so a zoom-out or shift shows the "
                  "real hair and background beyond the box, not its edge pixels repeated.")
# Augmentation (ImageDataGenerator's units).
flags.DEFINE_bool("flip", _A.flip, "Random horizontal flips.")
flags.DEFINE_float("rotation", _A.rotation_deg, "Max rotation, degrees.")
flags.DEFINE_float("zoom", _A.zoom, "Zoom range, fraction: scales in [1-zoom, 1+zoom].")
flags.DEFINE_list("zoom_range", None, "lower,upper output->source scales (ImageDataGenerator's "
                  "list form), instead of --zoom: 0.75,1.45 reaches faces 0.69x-1.33x their size.")
flags.DEFINE_float("translate", _A.translate, "Shift range, fraction of the size.")
flags.DEFINE_float("shear", _A.shear_deg, "Max shear, degrees.")
flags.DEFINE_float("brightness", _A.brightness, "Brightness jitter, fraction.")
flags.DEFINE_float("contrast", _A.contrast, "Contrast jitter, fraction.")
flags.DEFINE_float("saturation", _A.saturation, "Saturation jitter, fraction.")
flags.DEFINE_bool("random_resized_crop", _A.random_resized_crop, "Inception-style crops.")
flags.DEFINE_float("erasing_prob", _A.erasing_prob, "Random-erasing probability.")
flags.DEFINE_enum("augment_on", _I.augment_on, ["auto", "host", "device"],
                  "Where augmentation runs: host (tf.data, OpenCV warp), device (inside the "
                  "compiled train step) or auto (device on a GPU or with --tf_data_service, "
                  "else the faster one here; the choice and reason are logged).")
# Model.
flags.DEFINE_string("backbone", _M.backbone, "Registered backbone (python -m launch.models).")
flags.DEFINE_string("head", _M.head, "linear | deep | mlp.")
flags.DEFINE_enum("finetune", _M.finetune, ["frozen", "last_n", "full", "scratch"], "Fine-tuning.")
flags.DEFINE_integer("finetune_last_n", _M.finetune_last_n, "Layers trained by last_n.")
flags.DEFINE_string("weights", _M.weights, "none | imagenet | a .weights.h5/.keras file of ours.")
flags.DEFINE_string("weights_path", None, "Local ImageNet weights file (no downloads).")
flags.DEFINE_float("dropout", _M.dropout, "Head dropout.")
flags.DEFINE_enum("batch_norm", _M.batch_norm, ["fused", "keras"], "Batch-norm kernel.")
flags.DEFINE_float("bn_momentum", _M.bn_momentum, "Batch-norm momentum for every layer (0: the "
                   "architecture's own).")
# Training: one flag per TrainConfig field, same name and default.
for _field, _value in vars(_T).items():
  if _field in ("profile_steps", "step_decay_epochs"):
    flags.DEFINE_list(_field, [str(v) for v in _value], f"TrainConfig.{_field} (comma list).")
  elif isinstance(_value, bool):
    flags.DEFINE_bool(_field, _value, f"TrainConfig.{_field}.")
  elif isinstance(_value, int):
    flags.DEFINE_integer(_field, _value, f"TrainConfig.{_field}.")
  elif isinstance(_value, float):
    flags.DEFINE_float(_field, _value, f"TrainConfig.{_field}.")
  else:
    flags.DEFINE_string(_field, _value, f"TrainConfig.{_field}.")


def resolve_flagfile_args(argv: list[str]) -> list[str]:
  """`--flagfile=resnet50.flags` finds configs/resnet50.flags when no such file is in the
  working directory, so the documented commands work verbatim from the repo root."""
  out = []
  for arg in argv:
    if arg.startswith("--flagfile="):
      path = arg.split("=", 1)[1]
      if not os.path.exists(path) and os.path.exists(os.path.join(CONFIG_DIR, path)):
        arg = f"--flagfile={os.path.join(CONFIG_DIR, path)}"
    out.append(arg)
  return out


def experiment_config_from_flags() -> ExperimentConfig:
  """Builds and validates the frozen config (errors name the flag)."""
  if not F.data_dir:
    raise ValueError("--data_dir is required (a directory written by python -m tfrecords.shard)")
  batch = 0 if F.batch_size == "auto" else _int_flag("batch_size", F.batch_size)
  if batch < 0 or (batch == 0 and F.batch_size != "auto"):
    raise ValueError(f"--batch_size must be a positive integer or 'auto', got {F.batch_size!r}")
  size = (F.image_size, F.image_size)
  zoom_range = tuple(_float_flag("zoom_range", v) for v in F.zoom_range) if F.zoom_range else None
  augment = AugmentConfig(flip=F.flip, rotation_deg=F.rotation, zoom=F.zoom, zoom_range=zoom_range,
                          translate=F.translate, shear_deg=F.shear, brightness=F.brightness,
                          contrast=F.contrast, saturation=F.saturation,
                          random_resized_crop=F.random_resized_crop, erasing_prob=F.erasing_prob)
  train_kwargs = {name: getattr(F, name) for name in vars(_T)}
  train_kwargs["profile_steps"] = tuple(_int_flag("profile_steps", v) for v in F.profile_steps)
  train_kwargs["step_decay_epochs"] = tuple(_int_flag("step_decay_epochs", v)
                                            for v in F.step_decay_epochs)
  train = TrainConfig(**train_kwargs).validate()
  input_config = InputConfig(
      data_dir=F.data_dir, task=F.task, label_attribute=F.label_attribute, image_size=size,
      global_batch_size=batch, augment=augment, augment_on=F.augment_on, seed=train.seed,
      deterministic=train.deterministic,
      cache=F.cache, balance=F.balance, tf_data_service=F.tf_data_service,
      crop_box=tuple(_float_flag("crop_box", v) for v in F.crop_box) if F.crop_box else None,
      warp_from_frame=F.warp_from_frame,
      on_bad_record=F.on_bad_record, verify_shards=F.verify_shards)
  model = ModelConfig(backbone=F.backbone, head=F.head, image_size=size, finetune=F.finetune,
                      finetune_last_n=F.finetune_last_n, weights=F.weights,
                      weights_path=F.weights_path, dropout=F.dropout,
                      batch_norm=F.batch_norm, bn_momentum=F.bn_momentum).validate()
  return ExperimentConfig(input=input_config, model=model, train=train,
                          eval_split=F.eval_split).validate()


def experiment_config_with(args: list[str]) -> ExperimentConfig:
  """The config of the parsed flags with `args` (e.g. ["--zoom=0.3", "--noflip"]) parsed on
  top, as if they had ended the command line; every flag is put back afterwards."""
  saved = {name: (F[name].value, F[name].present) for name in F}
  try:
    leftover = F(["recipe variant", *resolve_flagfile_args(args)])[1:]
    if leftover:
      raise ValueError(f"not flags: {' '.join(leftover)} (write them as --name=value)")
    return experiment_config_from_flags()
  finally:
    for name, (value, present) in saved.items():
      F[name].value, F[name].present = value, present


def _int_flag(name: str, value: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"--{name}: expected an integer, got {value!r}") from None


def _float_flag(name: str, value: str) -> float:
  try:
    return float(value)
  except ValueError:
    raise ValueError(f"--{name}: expected a number, got {value!r}") from None
