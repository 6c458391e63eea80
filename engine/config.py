"""The experiment's typed configuration: frozen dataclasses, importable without TensorFlow.

One ExperimentConfig says everything a run needs: its input pipeline (InputConfig, with
AugmentConfig), its model (ModelConfig) and how to train (TrainConfig). Each `validate()`
checks fields on their own; `engine.resolve.resolve_experiment` completes and checks the
whole against the shards before anything is built, and that resolved config is what a run
directory's config.json holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

class ConfigError(ValueError):
  """A configuration that cannot run (on these shards, on this machine); the message names
  the field or flag at fault."""


OUTPUT_DTYPES = ("uint8", "float32", "bfloat16", "float16")
BAD_RECORD_POLICIES = ("error", "skip")
AUGMENT_PLACES = ("auto", "host", "device")
SHARD_CHECKS = ("fast", "full", "off")  # see integrity.verify_shards
# launch.predict refuses larger images from their header, before decoding: 80 MP is 240 MB
# as RGB uint8. Above every common camera (61 MP full frame, 64 MP phones), under Pillow's
# decompression-bomb warning (89.5 MP).
MAX_IMAGE_PIXELS = 80_000_000


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations to apply; 0 / False turns one off.

  `zoom` z draws each image's output->source scale from [1 - z, 1 + z] (ImageDataGenerator's
  float form); `zoom_range` (lower, upper) is its explicit form and replaces `zoom`. A scale s
  shows the face at 1/s of its size: z = 0.3 reaches faces at 0.77x-1.43x, so a frame 0.7x as
  tight (1.43 in scale) needs an upper bound of about 1.45.
  """

  flip: bool = False
  rotation_deg: float = 0.0
  zoom: float = 0.0
  zoom_range: tuple[float, float] | None = None
  translate: float = 0.0
  shear_deg: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  random_resized_crop: bool = False
  crop_scale: tuple[float, float] = (0.35, 1.0)
  erasing_prob: float = 0.0

  @property
  def zoom_bounds(self) -> tuple[float, float]:
    """The (lower, upper) output->source scale each image's zoom is drawn from."""
    return tuple(self.zoom_range) if self.zoom_range else (1.0 - self.zoom, 1.0 + self.zoom)

  @property
  def max_zoom_in(self) -> float:
    """How many times its stored size training showed a face at most (1.0: never larger):
    1 / the lower zoom bound, or 1 / sqrt(the least crop area) for random resized crops."""
    zoom_in = 1.0 / min(1.0, self.zoom_bounds[0])
    if self.random_resized_crop:
      zoom_in = max(zoom_in, 1.0 / math.sqrt(min(1.0, self.crop_scale[0])))
    return zoom_in

  @property
  def affine(self) -> bool:
    return (any((self.rotation_deg, self.translate, self.shear_deg))
            or self.zoom_bounds != (1.0, 1.0))

  def validate(self) -> "AugmentConfig":
    if not 0 <= self.zoom < 1:
      raise ValueError(f"zoom must be in [0, 1), got {self.zoom}")
    if self.zoom_range is not None:
      if self.zoom:
        raise ValueError(f"zoom ({self.zoom}) and zoom_range ({self.zoom_range}) both set the "
                         "zoom; set one (zoom 0 with zoom_range)")
      if not (len(self.zoom_range) == 2 and 0 < self.zoom_range[0] <= self.zoom_range[1]):
        raise ValueError(f"zoom_range must be lower,upper with 0 < lower <= upper, "
                         f"got {self.zoom_range}")
    if not (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
      raise ValueError(f"crop_scale must be lower,upper areas with 0 < lower <= upper <= 1, "
                       f"got {self.crop_scale}")
    return self

  @property
  def geometric(self) -> bool:
    """Anything that moves pixels: done by the warp."""
    return self.flip or self.affine

  @property
  def photometric(self) -> bool:
    """Anything that changes values in place: done in float after the warp."""
    return any((self.brightness, self.contrast, self.saturation, self.erasing_prob))


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """One input pipeline; see docs/DESIGN.md for the fields' meaning.

  `on_bad_record`: "error" (default) stops at an unreadable record (DataLossError;
  `integrity.corrupt_record_error` names the shard and record) or an undecodable image.
  "skip" drops them and goes on, with a cost: TFRecordDataset cannot resync inside a
  file after a bad record (on any DataLossError it moves to the next file, even when
  only the record's data checksum failed), so the bad record AND THE REST OF ITS SHARD
  are lost; other shards are unaffected (a missing shard is skipped whole: run
  `integrity.verify_shards` first). An undecodable image loses only its example.
  TensorFlow logs each drop ("Error raised with error message ...", without the file);
  eval datasets then hold fewer examples than the manifest lists (count the mask).

  `augment_on`: where training augmentation runs: "host" (in the tf.data pipeline, the
  geometric warp by OpenCV through tf.numpy_function), "device" (the pipeline only decodes
  and batches; the compiled train step augments, engine/data/device_augment.py) or "auto"
  (resolved by the trainer, the reason logged).

  `tf_data_service`: "grpc://HOST:PORT" of a tf.data service dispatcher: the training
  pipeline (decode, crop, batch) then runs on the service's workers, each example handed
  out at most once per epoch (dynamic sharding); evaluation stays local. Needs
  augmentation on the device and is not deterministic (workers race for the next file).

  `warp_from_frame`: training decodes the whole stored frame and the augmentation warp maps
  its output onto `crop_box` inside it, so a zoom-out, shift or rotation shows the real
  pixels beyond the box (hair, background), as a looser photo does, instead of the box's
  edge pixels repeated. Without movement it cuts and resizes exactly the box. Needs
  `crop_box` and shards of one image size; evaluation is unchanged.

  `verify_shards`: how the trainer and evaluator check the shards against manifest.json
  before reading them: "fast" (sizes and each file's first/last 64 KiB), "full" (SHA-256
  of every byte) or "off".
  """

  data_dir: str
  split: str = "train"
  task: str = "attribute"
  label_attribute: str = "Male"
  image_size: tuple[int, int] = (128, 128)
  global_batch_size: int = 64
  training: bool = True
  augment: AugmentConfig = AugmentConfig()
  augment_on: str = "auto"
  shuffle_buffer: int = 4096
  seed: int = 0
  deterministic: bool = False
  cache: str = "auto"
  output_dtype: str = "uint8"
  balance: str = "none"
  tf_data_service: str | None = None
  crop_box: tuple[float, float, float, float] | None = None
  warp_from_frame: bool = False
  on_bad_record: str = "error"
  verify_shards: str = "fast"

  def validate(self) -> "InputConfig":
    """Checks the fields on their own; `engine.resolve` checks them against the shards."""
    if self.output_dtype not in OUTPUT_DTYPES:
      raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
    if self.global_batch_size < 0:  # 0: auto, the trainer resolves it on the device
      raise ValueError(f"global_batch_size must be >= 1 (or 0: auto), got {self.global_batch_size}")
    if self.balance not in ("none", "resample"):
      raise ValueError(f"balance must be none or resample, got {self.balance!r}")
    if self.on_bad_record not in BAD_RECORD_POLICIES:
      raise ValueError(f"on_bad_record must be one of {BAD_RECORD_POLICIES}, "
                       f"got {self.on_bad_record!r}")
    if self.augment_on not in AUGMENT_PLACES:
      raise ValueError(f"augment_on must be one of {AUGMENT_PLACES}, got {self.augment_on!r}")
    self.augment.validate()
    if self.tf_data_service:
      self._validate_service()
    if self.verify_shards not in SHARD_CHECKS:
      raise ValueError(f"verify_shards must be one of {SHARD_CHECKS}, got {self.verify_shards!r}")
    if self.crop_box is not None:
      top, left, height, width = self.crop_box
      if not (len(self.crop_box) == 4 and 0 <= top and 0 <= left and height > 0 and width > 0
              and top + height <= 1 and left + width <= 1):
        raise ValueError(f"crop_box must be top,left,height,width fractions inside the image, "
                         f"got {self.crop_box}")
      if self.augment.random_resized_crop:
        raise ValueError("crop_box and random_resized_crop both choose the crop; use one")
    elif self.warp_from_frame:
      raise ValueError("warp_from_frame samples the stored frame around crop_box; "
                       "set crop_box (without one the decoded image is the whole frame already)")
    return self

  def _validate_service(self) -> None:
    if self.augment_on == "host":
      raise ValueError("augment_on=host cannot run with tf_data_service: the host path warps "
                       "with OpenCV through tf.numpy_function, Python that a tf.data service "
                       "worker cannot run; use augment_on=device (or auto)")
    if self.deterministic:
      raise ValueError("deterministic contradicts tf_data_service: its workers race for the "
                       "next file (dynamic sharding), so the batch order differs run to run")
    service_address(self.tf_data_service)  # raises on a malformed address


def service_address(target: str, name: str = "tf_data_service") -> tuple[str, str, int]:
  """"grpc://HOST:PORT" (or "HOST:PORT") -> (protocol, host, port); ValueError otherwise."""
  protocol, _, address = target.rpartition("://")
  host, _, port = address.rpartition(":")
  if protocol not in ("", "grpc") or not host or not port.isdigit():
    raise ValueError(f"{name} must be grpc://HOST:PORT, got {target!r}")
  return protocol or "grpc", host, int(port)


SERVICE_ROLES = ("dispatcher", "worker")


@dataclasses.dataclass(frozen=True)
class DataServiceConfig:
  """One tf.data service server (python -m launch.data_service; engine/data/service.py).

  Attributes:
    role: dispatcher or worker.
    port: the port to serve on (0: any free one; a dispatcher wants a fixed one).
    work_dir: dispatcher: a directory for its journal (fault-tolerant mode: restarted on
      the same port and work_dir it resumes its jobs). Empty: no journal.
    worker_timeout_ms: dispatcher: a worker silent this long is dropped from the jobs.
    dispatcher: worker: HOST:PORT (or grpc://HOST:PORT) of the dispatcher.
    worker_host: worker: the name trainers reach this worker by (default: the hostname).
  """

  role: str
  port: int = 0
  work_dir: str = ""
  worker_timeout_ms: int = 10_000
  dispatcher: str = ""
  worker_host: str = ""

  def validate(self) -> "DataServiceConfig":
    _one_of("role", self.role, SERVICE_ROLES)
    if not 0 <= self.port < 65536:
      raise ValueError(f"port must be in [0, 65535], got {self.port}")
    if self.worker_timeout_ms < 1:
      raise ValueError(f"worker_timeout_ms must be >= 1, got {self.worker_timeout_ms}")
    if self.role == "worker":
      if not self.dispatcher:
        raise ValueError("a worker needs --dispatcher=HOST:PORT")
      service_address(self.dispatcher, "dispatcher")
    return self


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


OPTIMIZERS = ("adam", "adamw", "sgd", "adamax")
SCHEDULES = ("constant", "cosine", "step", "plateau")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_MODES = ("auto", "true", "false")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
MONITOR_MODES = {"val_accuracy": "max", "val_f1_macro": "max", "val_auc": "max", "val_loss": "min"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train; see `python -m launch.train --helpfull` for each field's meaning."""

  model_dir: str = "runs/default"
  epochs: int = 10
  train_steps: int = 0                 # > 0 overrides epochs
  optimizer: str = "adamw"
  learning_rate: float = 1e-3
  schedule: str = "cosine"
  warmup_epochs: float = 0.0
  step_decay_epochs: tuple[int, ...] = ()
  step_decay_factor: float = 0.1
  weight_decay: float = 0.0
  momentum: float = 0.9
  label_smoothing: float = 0.0
  grad_clip_norm: float = 0.0
  ema_decay: float = 0.0               # > 0 keeps an exponential moving average of the weights
  precision: str = "auto"
  jit_compile: str = "auto"
  strategy: str = "auto"
  cpu_devices: int = 0                 # > 1 splits the CPU into logical devices (mirrored on CPU)
  steps_per_loop: int = 20
  grad_accum_steps: int = 1
  gpu_memory_limit_mb: int = 0
  seed: int = 0
  deterministic: bool = False
  early_stopping_patience: int = 0     # evaluations without improvement; 0 = off
  plateau_patience: int = 2            # schedule=plateau: evaluations before the LR drops
  plateau_factor: float = 0.5
  monitor: str = "val_accuracy"
  checkpoint_every: int = 0            # steps; 0 = once per epoch
  keep_checkpoints: int = 3
  eval_every: int = 0                  # steps; 0 = once per epoch
  eval_flip: bool = False              # test-time augmentation: average with the mirrored image
  log_every: int = 0                   # steps between console/TensorBoard lines; 0 = steps_per_loop
  profile_steps: tuple[int, ...] = ()
  class_weighting: bool = False
  summary_images: int = 8

  def validate(self) -> "TrainConfig":
    _one_of("optimizer", self.optimizer, OPTIMIZERS)
    _one_of("schedule", self.schedule, SCHEDULES)
    _one_of("precision", self.precision, PRECISIONS)
    _one_of("jit_compile", self.jit_compile, JIT_MODES)
    _one_of("strategy", self.strategy, STRATEGIES)
    _one_of("monitor", self.monitor, tuple(MONITOR_MODES))
    for name in ("epochs", "train_steps", "checkpoint_every", "eval_every", "log_every",
                 "early_stopping_patience", "gpu_memory_limit_mb", "cpu_devices"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not self.epochs and not self.train_steps:
      raise ValueError("set epochs or train_steps (both are 0)")
    if self.steps_per_loop < 1 or self.grad_accum_steps < 1:
      raise ValueError("steps_per_loop and grad_accum_steps must be >= 1")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.ema_decay < 1.0:
      raise ValueError("label_smoothing and ema_decay must be in [0, 1)")
    if self.profile_steps and (len(self.profile_steps) != 2
                               or not 0 <= self.profile_steps[0] < self.profile_steps[1]):
      raise ValueError(f"profile_steps must be A,B with 0 <= A < B, got {self.profile_steps}")
    if self.strategy == "mirrored" and self.precision == "mixed_float16" and self.cpu_devices > 1:
      raise ValueError("precision=mixed_float16 needs a GPU; it contradicts strategy=mirrored "
                       "over logical CPU devices (use float32 or mixed_bfloat16)")
    if self.strategy == "one_device" and self.cpu_devices > 1:
      raise ValueError("strategy=one_device contradicts cpu_devices > 1 (use mirrored)")
    return self


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run needs: written to model_dir/config.json before step 0."""

  input: InputConfig
  model: ModelConfig
  train: TrainConfig
  eval_split: str = "validation"

  def validate(self) -> "ExperimentConfig":
    """Each part on its own, then what two parts both hold must agree."""
    self.input.validate()
    self.model.validate()
    self.train.validate()
    shared = {"image_size": (self.input.image_size, self.model.image_size, "model"),
              "seed": (self.input.seed, self.train.seed, "trainer"),
              "deterministic": (self.input.deterministic, self.train.deterministic, "trainer")}
    for name, (ours, theirs, other) in shared.items():
      if ours != theirs:
        raise ValueError(f"{name}: the input pipeline has {ours}, the {other} {theirs}; "
                         "they must agree")
    return self

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "ExperimentConfig":
    return cls(input=_from_dict(InputConfig, d["input"]), model=_from_dict(ModelConfig, d["model"]),
               train=_from_dict(TrainConfig, d["train"]), eval_split=d.get("eval_split", "validation"))


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")


def _from_dict(cls, d: dict):
  """Rebuilds a (nested) frozen dataclass from its asdict(), turning lists back into tuples."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name not in d:
      continue
    value, hint = d[field.name], hints[field.name]
    if hint is AugmentConfig:
      value = _from_dict(AugmentConfig, value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[field.name] = value
  return cls(**kwargs)
