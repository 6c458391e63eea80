import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from engine.config import AugmentConfig, ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.data.decode import crop_window
from engine.data.device_augment import augment_on_device
from engine.data.manifest import read_manifest, split_files
from engine.data.pipeline import eval_records, make_dataset
from engine.resolve import class_weights
from engine.tasks import TASKS
from tests.engine.data.damage import flip_byte, record_starts, replace_image


def _labels_of(celeba_dir, split_code, column):
  parts = dict(l.split() for l in open(os.path.join(celeba_dir, "list_eval_partition.txt")))
  rows = open(os.path.join(celeba_dir, "list_attr_celeba.txt")).read().splitlines()
  names = rows[1].split()
  return sorted(int(r.split()[1 + names.index(column)] == "1") for r in rows[2:]
                if parts[r.split()[0]] == split_code)


def test_training_batches_are_static_uint8_with_binary_labels(celeba_shards):
  ds = make_dataset(InputConfig(celeba_shards, image_size=(32, 28), global_batch_size=16,
                                augment=AugmentConfig(flip=True, rotation_deg=10)))
  assert ds.element_spec[0].shape == (16, 32, 28, 3)  # static for XLA
  images, labels = next(iter(ds))
  assert images.dtype == tf.uint8 and labels.dtype == tf.int32
  assert set(labels.numpy()) <= {0, 1}


def test_eval_sees_every_example_exactly_once(celeba_dir, celeba_shards):
  ds = make_dataset(InputConfig(celeba_shards, split="validation", training=False,
                                image_size=(32, 28), global_batch_size=10))
  batches = list(ds)
  assert len(batches) == 4  # 32 examples: 3 full batches + 2 real in the last
  masks = np.concatenate([m.numpy() for _, _, m in batches])
  labels = np.concatenate([l.numpy() for _, l, _ in batches])
  assert masks.sum() == 32 and masks[:32].all() and not masks[32:].any()
  assert sorted(labels[masks > 0]) == _labels_of(celeba_dir, "1", "Male")


def test_deterministic_pipelines_repeat_exactly(celeba_shards):
  config = InputConfig(celeba_shards, image_size=(32, 28), global_batch_size=8, seed=5,
                       deterministic=True, augment=AugmentConfig(flip=True, zoom=0.2, erasing_prob=0.5))
  first = [b[0].numpy() for b in make_dataset(config).take(3)]
  second = [b[0].numpy() for b in make_dataset(config).take(3)]
  other = [b[0].numpy() for b in make_dataset(InputConfig(**{**config.__dict__, "seed": 6})).take(3)]
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, c) for a, c in zip(first, other))


def test_worker_sharding_splits_files_without_overlap(celeba_shards):
  config = InputConfig(celeba_shards, training=False, image_size=(32, 28), global_batch_size=4)
  seen = []
  for worker in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                         num_replicas_in_sync=2)
    images = [i.numpy()[m.numpy() > 0] for i, _, m in make_dataset(config, context)]
    seen.append({im.tobytes() for im in np.concatenate(images)})
  assert not seen[0] & seen[1]
  assert len(seen[0]) + len(seen[1]) == 96


@pytest.mark.parametrize("task,dtype,shape", [("identity", tf.int32, (8,)),
                                              ("attributes", tf.float32, (8, 4))])
def test_identity_and_multilabel_tasks(celeba_shards, task, dtype, shape):
  ds = make_dataset(InputConfig(celeba_shards, task=task, image_size=(32, 28),
                                global_batch_size=8, output_dtype="float32"))
  images, labels = next(iter(ds))
  assert images.dtype == tf.float32 and float(tf.reduce_max(images)) <= 255.0
  assert labels.dtype == dtype and labels.shape == shape
  manifest = read_manifest(celeba_shards)
  if task == "identity":
    classes = TASKS.get(task).num_classes(manifest, "Male")
    assert 0 <= int(tf.reduce_min(labels)) and int(tf.reduce_max(labels)) < classes


def test_class_weights_balance_the_manifest_counts(celeba_shards):
  manifest = read_manifest(celeba_shards)
  counts = manifest["splits"]["train"]["class_counts"]["Male"]
  weights = class_weights(ExperimentConfig(InputConfig(celeba_shards), ModelConfig(),
                                           TrainConfig(class_weighting=True)), manifest)
  assert weights[0] * counts["0"] == pytest.approx(weights[1] * counts["1"])


def test_balanced_resampling_evens_out_classes(celeba_shards):
  ds = make_dataset(InputConfig(celeba_shards, image_size=(16, 16), global_batch_size=50,
                                balance="resample", task="attribute", label_attribute="Eyeglasses"))
  labels = np.concatenate([l.numpy() for _, l in ds.take(8)])
  assert abs(labels.mean() - 0.5) < 0.1


def test_bad_requests_are_named(celeba_shards):
  with pytest.raises(ValueError, match="unknown attribute 'Bald'; known: Eyeglasses"):
    make_dataset(InputConfig(celeba_shards, label_attribute="Bald"))
  with pytest.raises(ValueError, match="no split 'dev'"):
    make_dataset(InputConfig(celeba_shards, split="dev"))
  with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
    make_dataset(InputConfig("/nonexistent"))


def test_evaluation_stays_local_with_a_tf_data_service(celeba_shards):
  """Only training goes through the service: an eval pass counts every example once,
  locally (this address has no dispatcher: a probe would fail)."""
  config = InputConfig(celeba_shards, split="validation", training=False, image_size=(16, 16),
                       global_batch_size=8, tf_data_service="grpc://localhost:1")
  masks = [m.numpy().sum() for _, _, m in make_dataset(config)]
  assert sum(masks) == 32


def test_crop_box_decodes_only_the_box_and_matches_crop_then_resize(celeba_shards):
  box = (0.25, 0.1, 0.6, 0.8)
  config = InputConfig(celeba_shards, split="validation", training=False, image_size=(24, 24),
                       global_batch_size=4, output_dtype="float32", crop_box=box)
  images = next(iter(make_dataset(config)))[0].numpy()
  files = [os.path.join(celeba_shards, s["file"])
           for s in read_manifest(celeba_shards)["splits"]["validation"]["shards"]]
  first = next(iter(tf.data.TFRecordDataset(files[:1])))
  encoded = tf.io.parse_single_example(first, {"image": tf.io.FixedLenFeature([], tf.string)})
  full = tf.io.decode_jpeg(encoded["image"], channels=3)
  top, left, height, width = crop_window(tf.shape(full), box).numpy()
  assert (height, width) == (round(0.6 * full.shape[0]), round(0.8 * full.shape[1]))
  expected = tf.image.resize(full[top:top + height, left:left + width], (24, 24)).numpy()
  np.testing.assert_allclose(images[0], expected, atol=1.0)  # fused vs full IDCT rounding
  with pytest.raises(ValueError, match="crop_box"):
    make_dataset(InputConfig(celeba_shards, crop_box=(0.5, 0.0, 0.6, 1.0)))


def _config(shards, **kwargs):
  return InputConfig(shards, image_size=(32, 28), global_batch_size=8, seed=3,
                     deterministic=True, **kwargs)


@pytest.mark.parametrize("augment", [AugmentConfig(),
                                     AugmentConfig(flip=True, rotation_deg=10, erasing_prob=0.5)])
def test_decoded_cache_changes_speed_not_batches(celeba_shards, augment):
  encoded = make_dataset(_config(celeba_shards, cache="memory", augment=augment))
  decoded = make_dataset(_config(celeba_shards, cache="decoded", augment=augment))
  # Five batches of 8 from 64 training examples: the cache is replayed from the second epoch.
  for (a, la), (b, lb) in zip(encoded.take(10), decoded.take(10)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(la.numpy(), lb.numpy())


@pytest.mark.parametrize("cache", ["memory", "decoded"])
def test_skip_batches_resumes_where_a_run_stopped(celeba_shards, cache):
  config = _config(celeba_shards, cache=cache, augment=AugmentConfig(flip=True, zoom=0.1))
  whole = [b[0].numpy() for b in make_dataset(config).take(12)]
  resumed = [b[0].numpy() for b in make_dataset(config, skip_batches=9).take(3)]
  for a, b in zip(whole[9:], resumed):
    np.testing.assert_array_equal(a, b)


def test_cache_auto_prefers_decoded_images_when_they_fit(celeba_shards, caplog, monkeypatch):
  caplog.set_level("INFO")
  make_dataset(_config(celeba_shards))
  assert "cache=decoded" in caplog.text
  monkeypatch.setattr("engine.data.cache.DECODED_CACHE_MAX_BYTES", 1000)
  make_dataset(_config(celeba_shards))
  assert "cache=memory (encoded bytes in memory" in caplog.text
  with pytest.raises(ValueError, match="random_resized_crop"):
    make_dataset(_config(celeba_shards, cache="decoded",
                         augment=AugmentConfig(random_resized_crop=True)))


def test_random_resized_crop_and_mixed_paths_keep_static_shapes(celeba_shards):
  for augment in (AugmentConfig(random_resized_crop=True, flip=True, brightness=0.2),
                  AugmentConfig(random_resized_crop=True, rotation_deg=10)):
    ds = make_dataset(_config(celeba_shards, augment=augment, output_dtype="float32"))
    images, _ = next(iter(ds))
    assert images.shape == (8, 32, 28, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


def _private_copy(shards, tmp_path, split="validation"):
  out = str(tmp_path / "shards")
  shutil.copytree(shards, out)
  return out, split_files(out, read_manifest(out), split)


def _eval_examples(shards, **kwargs):
  """(images, labels, mask) of a whole eval pass, batches concatenated."""
  ds = make_dataset(InputConfig(shards, split="validation", training=False, image_size=(16, 16),
                                global_batch_size=10, **kwargs))
  return [np.concatenate([b[i].numpy() for b in ds]) for i in range(3)]


def test_skip_loses_a_corrupt_record_and_the_rest_of_its_shard_only(celeba_shards, tmp_path,
                                                                   caplog):
  out, files = _private_copy(celeba_shards, tmp_path)
  per_file = [s["num_examples"] for s in read_manifest(out)["splits"]["validation"]["shards"]]
  flip_byte(files[0], record_starts(files[0])[2] + 12 + 40)  # record 2 of the first shard
  with pytest.raises(tf.errors.DataLossError):
    _eval_examples(out)
  with caplog.at_level("WARNING"):
    images, labels, mask = _eval_examples(out, on_bad_record="skip")
  kept = [*range(2), *range(per_file[0], sum(per_file))]  # TFRecordDataset cannot resync
  # The skip is counted and logged, naming the shard and the record.
  assert f"{files[0]}: record 2 (counted from 0) is unreadable" in caplog.text
  assert f"{32 - len(kept)} of 32 records skipped" in caplog.text
  clean_images, clean_labels, _ = _eval_examples(celeba_shards)
  assert mask.sum() == len(kept) == 32 - (per_file[0] - 2) and len(mask) % 10 == 0
  assert mask[:len(kept)].all() and not mask[len(kept):].any()  # padding only at the end
  np.testing.assert_array_equal(images[:len(kept)], clean_images[kept])
  np.testing.assert_array_equal(labels[:len(kept)], clean_labels[kept])
  # Other features of the same examples, e.g. for evaluation slices: the same records.
  config = InputConfig(out, split="validation", on_bad_record="skip")
  assert len(list(eval_records(config, read_manifest(out)))) == len(kept)


def test_skip_loses_only_the_example_of_an_undecodable_image(celeba_shards, tmp_path):
  out, files = _private_copy(celeba_shards, tmp_path)
  replace_image(files[1], 3, b"<html>not a JPEG</html>")
  with pytest.raises(tf.errors.InvalidArgumentError):
    _eval_examples(out)
  images, labels, mask = _eval_examples(out, on_bad_record="skip")
  first = read_manifest(out)["splits"]["validation"]["shards"][0]["num_examples"]
  kept = [i for i in range(32) if i != first + 3]
  clean_images, clean_labels, _ = _eval_examples(celeba_shards)
  assert mask.sum() == 31 and mask[:31].all()
  np.testing.assert_array_equal(images[:31], clean_images[kept])
  np.testing.assert_array_equal(labels[:31], clean_labels[kept])


@pytest.mark.parametrize("cache", ["decoded", "memory"])
def test_training_skips_a_corrupt_shard_and_keeps_going(celeba_shards, tmp_path, cache):
  out, train = _private_copy(celeba_shards, tmp_path, "train")
  flip_byte(train[0], record_starts(train[0])[1] + 12 + 40)
  config = _config(out, cache=cache, augment=AugmentConfig(flip=True))
  with pytest.raises(tf.errors.DataLossError):
    list(make_dataset(config).take(20))
  batches = list(make_dataset(InputConfig(**{**config.__dict__, "on_bad_record": "skip"})).take(20))
  assert len(batches) == 20 and batches[-1][0].shape == (8, 32, 28, 3)
  with pytest.raises(ValueError, match="on_bad_record must be one of"):
    make_dataset(InputConfig(out, on_bad_record="ignore"))


def test_eval_on_shards_without_a_train_split(validation_only_dir, validation_only_shards):
  """Shards of CelebA's validation partition alone (to evaluate a model trained elsewhere)."""
  manifest = read_manifest(validation_only_shards)
  expected = _labels_of(validation_only_dir, "1", "Male")
  attribute = TASKS.get("attribute")
  assert attribute.num_classes(manifest, "Male") == 2
  assert attribute.class_counts(manifest, "Male", "validation") == [
      expected.count(0), expected.count(1)]
  ds = make_dataset(InputConfig(validation_only_shards, split="validation", training=False,
                                image_size=(16, 16), global_batch_size=64))
  _, labels, mask = (np.concatenate([b[i].numpy() for b in ds]) for i in range(3))
  assert mask.sum() == 160 and sorted(labels[mask > 0]) == expected
  with pytest.raises(ValueError, match=r"no split 'train'; has \['validation'\]"):
    make_dataset(InputConfig(validation_only_shards))
  with pytest.raises(ValueError, match="no training identities"):
    TASKS.get("identity").num_classes(manifest, "Male")
  with pytest.raises(ValueError, match=r"no split 'train'; has \['valid"):
    attribute.class_counts(manifest, "Male", "train")


def test_warp_from_frame_cuts_the_box_and_zooms_out_onto_the_real_frame(celeba_shards):
  """The 54x44 frames' box (18, 11, 18, 22) zoomed out 2x is rows 9-45, columns 0-44 of
  the frame: real pixels, where the decoded-box path repeats the box's edges."""
  box = (1 / 3, 0.25, 1 / 3, 0.5)

  def config(augment, augment_on="host", **kwargs):
    return InputConfig(celeba_shards, image_size=(12, 12), global_batch_size=1, crop_box=box,
                       shuffle_buffer=1, deterministic=True, augment=augment, cache="none",
                       output_dtype="float32", augment_on=augment_on, **kwargs)

  def first_image(augment, **kwargs):  # the pipeline's first image (the same every time)
    return make_dataset(config(augment, **kwargs)).take(1).get_single_element()[0][0].numpy()

  plain = first_image(AugmentConfig())
  # Which training frame that is: the one whose box, resized, it is.
  files = [os.path.join(celeba_shards, s["file"])
           for s in read_manifest(celeba_shards)["splits"]["train"]["shards"]]
  frames = [tf.io.decode_jpeg(tf.io.parse_single_example(
      r, {"image": tf.io.FixedLenFeature([], tf.string)})["image"], channels=3)
      for r in tf.data.TFRecordDataset(files)]
  errors = [np.abs(tf.image.resize(f[18:36, 11:33], (12, 12)).numpy() - plain).max()
            for f in frames]
  full = frames[int(np.argmin(errors))]
  assert min(errors) <= 2.0 and sorted(errors)[1] > 20  # one frame, unambiguously
  np.testing.assert_allclose(first_image(AugmentConfig(), warp_from_frame=True), plain, atol=1.0)
  zoom_out = AugmentConfig(zoom_range=(2.0, 2.0))
  framed = first_image(zoom_out, warp_from_frame=True)
  expected = tf.image.resize(full[9:45, 0:44], (12, 12)).numpy()
  assert np.abs(framed - expected).max() <= 2.0
  assert np.abs(first_image(zoom_out) - expected).mean() > 4 * np.abs(framed - expected).mean()
  # The device path ships the whole frame and applies the same window.
  device = config(zoom_out, augment_on="device", warp_from_frame=True)
  (pixels, params), _ = make_dataset(device).take(1).get_single_element()
  assert pixels.shape[1:3] == (54, 44)
  assert np.abs(augment_on_device((pixels, params), device)[0].numpy() - framed).max() <= 2.0
  with pytest.raises(ValueError, match="warp_from_frame samples the stored frame around crop_box"):
    make_dataset(InputConfig(celeba_shards, warp_from_frame=True))
