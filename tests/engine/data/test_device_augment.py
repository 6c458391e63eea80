"""Augmentation on the device agrees with the host path, compiles with XLA, and leaves the
input pipeline free of Python."""

import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

from engine.config import AugmentConfig, InputConfig
from engine.data import augment as A
from engine.data.device_augment import (CPU_SINGLE_PROCESS_CHOICE, augment_on_device,
                                        bilinear_warp, make_device_augment, resolve_augment_on)
from engine.data.pipeline import make_dataset

EVERYTHING = AugmentConfig(flip=True, rotation_deg=20, zoom=0.15, translate=0.1, shear_deg=10,
                           brightness=0.2, contrast=0.3, saturation=0.3, erasing_prob=0.5)
PYTHON_OPS = (b"PyFunc", b"EagerPyFunc", b"NumpyFunction")


def _smooth_batch(n=6, h=46, w=38) -> tf.Tensor:
  """Smooth (photo-like) uint8 images: bilinear samplers agree on them to a level or so."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  images = [np.stack([127 + 120 * np.sin(x / (4 + i)), 127 + 120 * np.cos(y / 5),
                      250 * (x + y) / (h + w)], axis=-1) for i in range(n)]
  return tf.constant(np.round(images).astype(np.uint8))


def test_gather_warp_matches_the_opencv_warp_edge_fill_included():
  images = _smooth_batch()
  # Large rotations uncover the corners: the edge pixel must repeat there in both.
  config = AugmentConfig(flip=True, rotation_deg=40, zoom=0.2, shear_deg=10, translate=0.1)
  matrices = A.geometry_matrices(tf.constant([1, 2]), 6, (32, 28), config, (46, 38))
  ours = bilinear_warp(images, matrices, (32, 28)).numpy()
  opencv = A.warp(images, matrices, (32, 28)).numpy().astype(np.float32)
  assert ours.shape == opencv.shape == (6, 32, 28, 3)
  assert np.abs(ours - opencv).max() <= 2.0  # OpenCV samples at 1/32 px and rounds to uint8


def test_device_path_applies_the_host_paths_draws():
  images, seed = _smooth_batch(), tf.constant([7, 3])
  host = A.augment(images, seed, EVERYTHING, (32, 28)).numpy().astype(np.float32)
  params = A.augment_params(seed, 6, EVERYTHING, (32, 28), (46, 38))
  config = InputConfig("unused", image_size=(32, 28), augment=EVERYTHING)
  device = augment_on_device((images, params), config)
  assert device.dtype == tf.uint8 and device.shape == (6, 32, 28, 3)
  difference = np.abs(device.numpy().astype(np.float32) - host)
  # Same flips, angles, erased rectangles, colour factors: only interpolation rounding differs.
  assert np.mean(difference <= 2.0) > 0.999
  assert not np.allclose(host[0], host[1], atol=2)  # each image its own draw


def test_device_augmentation_compiles_with_xla_and_matches_the_graph():
  config = InputConfig("unused", image_size=(32, 28), augment=EVERYTHING, augment_on="device")
  images = _smooth_batch()
  params = A.augment_params(tf.constant([4, 4]), 6, EVERYTHING, (32, 28), (46, 38))
  compiled = tf.function(lambda p, x: augment_on_device((p, x), config), jit_compile=True)
  xla = compiled(images, params).numpy().astype(np.int32)
  graph = augment_on_device((images, params), config).numpy().astype(np.int32)
  assert np.abs(xla - graph).max() <= 1
  step_augment = make_device_augment(config)
  np.testing.assert_array_equal(step_augment((images, params)).numpy(), xla)
  assert make_device_augment(dataclasses.replace(config, augment_on="host")) is None


def _graph_ops(ds: tf.data.Dataset) -> bytes:
  return ds._as_serialized_graph().numpy()  # pylint: disable=protected-access


def _training_config(shards: str, **kwargs) -> InputConfig:
  return InputConfig(shards, image_size=(32, 28), global_batch_size=8, augment=EVERYTHING,
                     seed=3, deterministic=True, **kwargs)


def test_device_pipeline_has_no_python_and_its_batches_augment_like_the_host_pipeline(
    celeba_shards):
  host = make_dataset(_training_config(celeba_shards, augment_on="host"))
  device = make_dataset(_training_config(celeba_shards, augment_on="device"))
  assert any(op in _graph_ops(host) for op in PYTHON_OPS)  # the OpenCV warp
  assert not any(op in _graph_ops(device) for op in PYTHON_OPS)
  config = _training_config(celeba_shards)
  for (images, labels), ((pixels, params), device_labels) in zip(host.take(3), device.take(3)):
    assert pixels.dtype == tf.uint8 and pixels.shape[1:] == (54, 44, 3)  # the decoded size
    np.testing.assert_array_equal(labels.numpy(), device_labels.numpy())
    augmented = augment_on_device((pixels, params), config).numpy().astype(np.float32)
    assert np.mean(np.abs(augmented - images.numpy()) <= 2.0) > 0.99


def test_device_pipeline_skips_to_the_same_batches(celeba_shards):
  config = _training_config(celeba_shards, augment_on="device")
  whole = list(make_dataset(config).take(6))[4:]
  resumed = list(make_dataset(config, skip_batches=4).take(2))
  for ((a, pa), _), ((b, pb), _) in zip(whole, resumed):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(pa["matrices"].numpy(), pb["matrices"].numpy())


def test_auto_picks_by_machine_and_service_and_says_why(caplog):
  caplog.set_level(logging.INFO)
  base = InputConfig("unused")
  expected = "device" if tf.config.list_physical_devices("GPU") else CPU_SINGLE_PROCESS_CHOICE
  assert resolve_augment_on(base).augment_on == expected
  assert "augmentation on the" in caplog.text and "benchmarks.augment_placement" in caplog.text
  served = dataclasses.replace(base, tf_data_service="grpc://localhost:5050")
  assert resolve_augment_on(served).augment_on == "device"
  assert resolve_augment_on(dataclasses.replace(base, augment_on="device")).augment_on == "device"


@pytest.mark.parametrize("changes, message", [
    ({"augment_on": "host"}, "Python that a tf.data service worker cannot run"),
    ({"deterministic": True}, "deterministic contradicts tf_data_service"),
    ({"tf_data_service": "http://x:1"}, "must be grpc://HOST:PORT"),
    ({"tf_data_service": "grpc://x"}, "must be grpc://HOST:PORT"),
])
def test_service_refuses_what_it_cannot_honour(changes, message):
  config = {"data_dir": "unused", "tf_data_service": "grpc://localhost:5050", **changes}
  with pytest.raises(ValueError, match=message):
    InputConfig(**config).validate()
