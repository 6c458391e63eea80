"""The training pipeline through a tf.data service whose dispatcher and workers are other
processes: batches come back, every example once per epoch, a wrong address fails fast."""

import collections
import re
import time

import pytest
import tensorflow as tf

from engine.config import AugmentConfig, ConfigError, InputConfig
from engine.data import service
from engine.data.device_augment import augment_on_device
from engine.data.local_service import LocalService, free_port
from engine.data.manifest import read_manifest
from engine.data.pipeline import make_dataset, train_file_names


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
  with LocalService(str(tmp_path_factory.mktemp("service")), num_workers=2) as local:
    yield local


def _config(shards: str, target: str) -> InputConfig:
  return InputConfig(shards, image_size=(32, 32), global_batch_size=8, tf_data_service=target,
                     augment=AugmentConfig(flip=True, rotation_deg=10, erasing_prob=0.5),
                     augment_on="device")


@pytest.mark.slow  # starts a dispatcher and two worker processes (shared by the next test)
def test_workers_in_other_processes_serve_the_training_batches(celeba_shards, two_workers):
  """The dataset crosses a process boundary: it holds no Python (no numpy_function)."""
  config = _config(celeba_shards, two_workers.target)
  ds = make_dataset(config, service_job="test-batches")
  seen = set()
  for (pixels, params), labels in ds.take(24):  # two epochs of 96 faces
    assert pixels.shape == (8, 54, 44, 3) and pixels.dtype == tf.uint8
    assert labels.shape == (8,) and set(params) == {"matrices", "erasing"}
    seen.update(image.tobytes() for image in pixels.numpy())
    images = augment_on_device((pixels, params), config)
  assert images.shape == (8, 32, 32, 3)
  assert len(seen) > 48  # different examples, not one batch over and over
  # the dispatcher's log counts the two worker processes (they may register in one poll or two)
  counts = re.findall(r"tf.data service workers: \d+ -> (\d+)", two_workers.dispatcher_log())
  assert counts[-1] == "2"


@pytest.mark.slow
def test_two_workers_produce_every_example_once_per_epoch(celeba_shards, two_workers):
  config = _config(celeba_shards, two_workers.target)
  served = service.distribute(train_file_names(config, epochs=2), config.tf_data_service, None)
  counts = collections.Counter(name.decode() for name in served.as_numpy_iterator())
  expected = read_manifest(celeba_shards)["splits"]["train"]["num_examples"]
  assert len(counts) == expected and set(counts.values()) == {2}


def test_an_unreachable_dispatcher_is_named_within_the_timeout(celeba_shards, monkeypatch):
  monkeypatch.setattr(service, "PROBE_TIMEOUT_S", 1.0)
  port = free_port()
  started = time.monotonic()
  with pytest.raises(ConfigError, match=f"no dispatcher reachable at localhost:{port} within 1 s"):
    make_dataset(_config(celeba_shards, f"grpc://localhost:{port}"))
  assert time.monotonic() - started < 5
