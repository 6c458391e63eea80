import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from engine.data import schema
from engine.data.sharding import ShardConfig, ShardingError, shard_dataset
from engine.data.sharding.sharder import PLAN_FILE
from tests.engine.data.sharding.helpers import copy_tree, mark_partition, shard_bytes, write_jpeg


def _final_files(out_dir):
  if not os.path.exists(out_dir):
    return []
  return [n for n in os.listdir(out_dir) if ".tfrecord-" in n and not n.endswith(".tmp")
          or n == schema.MANIFEST]


def test_output_loads_with_tfds_and_keeps_every_feature(celeba_dir, celeba_shards):
  builder = tfds.builder_from_directory(celeba_shards)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
      "train": 96, "validation": 32, "test": 32}
  assert builder.info.splits["train"].num_shards == 4
  example = next(iter(builder.as_dataset(split="validation")))
  assert example["image"].shape == (54, 44, 3)
  name = example["file_name"].numpy().decode()
  with open(os.path.join(celeba_dir, "img_align_celeba", name), "rb") as f:
    original = tf.io.decode_jpeg(f.read())
  np.testing.assert_array_equal(example["image"].numpy(), original.numpy())  # bytes kept as-is
  assert set(example["attributes"]) == {"Eyeglasses", "Male", "Smiling", "Young"}
  assert example["identity"].dtype == tf.int64 and "lefteye_x" in example["landmarks"]


def test_manifest_counts_checksums_and_shuffle(celeba_shards):
  manifest = json.load(open(os.path.join(celeba_shards, schema.MANIFEST)))
  train = manifest["splits"]["train"]
  assert train["num_examples"] == sum(s["num_examples"] for s in train["shards"]) == 96
  males = sum(1 for l in open(os.path.join(manifest["source_dir"], "list_attr_celeba.txt"))
              .read().splitlines()[2:98] if l.split()[2] == "1")
  assert train["class_counts"]["Male"]["1"] == males
  for shard in train["shards"]:
    path = os.path.join(celeba_shards, shard["file"])
    assert os.path.getsize(path) == shard["bytes"]
  names = [r["file_name"].numpy().decode() for r in
           tfds.builder_from_directory(celeba_shards).as_dataset(split="train", shuffle_files=False)]
  assert names != sorted(names) and sorted(names) == sorted(set(names))  # mixed across shards


def test_same_inputs_give_byte_identical_shards(celeba_dir, celeba_shards, tmp_path):
  out = str(tmp_path / "again")
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=4))
  assert shard_bytes(out) == shard_bytes(celeba_shards)


@pytest.mark.slow
def test_worker_count_does_not_change_bytes(celeba_dir, celeba_shards, tmp_path):
  out = str(tmp_path / "two_workers")
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=4, workers=2))
  assert shard_bytes(out) == shard_bytes(celeba_shards)


def test_resume_finishes_missing_shards_byte_identical(celeba_dir, celeba_shards, tmp_path):
  out = str(tmp_path / "resumed")
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=4))
  # What a kill leaves: a shard never renamed (only its .tmp), no metadata, no manifest.
  victim = sorted(n for n in os.listdir(out) if "train.tfrecord" in n)[2]
  os.replace(os.path.join(out, victim), os.path.join(out, victim + ".tmp"))
  for name in (schema.MANIFEST, "dataset_info.json", "features.json"):
    os.remove(os.path.join(out, name))
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=4))
  assert shard_bytes(out) == shard_bytes(celeba_shards)
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_finished_run_rerun_does_nothing(celeba_dir, celeba_shards, caplog):
  before = {n: os.stat(os.path.join(celeba_shards, n)).st_mtime_ns for n in os.listdir(celeba_shards)}
  with caplog.at_level("INFO"):
    shard_dataset(ShardConfig("celeba", celeba_dir, celeba_shards, num_shards=4))
  assert "nothing to do" in caplog.text
  assert before == {n: os.stat(os.path.join(celeba_shards, n)).st_mtime_ns
                    for n in os.listdir(celeba_shards)}


def test_other_options_into_same_dir_are_refused(celeba_dir, celeba_shards):
  with pytest.raises(ShardingError, match="different run"):
    shard_dataset(ShardConfig("celeba", celeba_dir, celeba_shards, num_shards=2))


def _break_image(celeba_dir, tmp_path, how):
  d = copy_tree(celeba_dir, tmp_path / "c")
  path = os.path.join(d, "img_align_celeba", "000007.jpg")
  if how == "missing":
    os.remove(path)
  elif how == "truncated":
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
  else:  # a PNG saved as .jpg
    open(path, "wb").write(tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy())
  return d, path


@pytest.mark.parametrize("how,reason", [("missing", "cannot read"), ("truncated", "truncated"),
                                        ("not_jpeg", "not a JPEG")])
def test_bad_image_names_file_and_writes_nothing(celeba_dir, tmp_path, how, reason):
  d, path = _break_image(celeba_dir, tmp_path, how)
  out = str(tmp_path / "out")
  with pytest.raises(ShardingError, match=reason) as error:
    shard_dataset(ShardConfig("celeba", d, out, num_shards=4))
  assert path in str(error.value) and "list_attr_celeba.txt:9" in str(error.value)
  assert _final_files(out) == []


def test_skip_policy_reports_bad_images(celeba_dir, tmp_path):
  d, path = _break_image(celeba_dir, tmp_path, "truncated")
  manifest = shard_dataset(ShardConfig("celeba", d, str(tmp_path / "out"), num_shards=4,
                                       on_bad_image="skip"))
  assert [s["file"] for s in manifest["skipped"]] == [path]
  assert sum(s["num_examples"] for s in manifest["splits"].values()) == 159


def test_balanced_subset_and_reencode(celeba_dir, tmp_path):
  out = str(tmp_path / "out")
  manifest = shard_dataset(ShardConfig("celeba", celeba_dir, out, max_examples=40,
                                       balance_by="Male", image_size=(24, 20), seed=3))
  counts = {"0": 0, "1": 0}
  for split in manifest["splits"].values():
    for value, n in split["class_counts"]["Male"].items():
      counts[value] += n
  assert counts == {"0": 20, "1": 20}
  assert manifest["image_shape"] == [24, 20, 3]
  example = next(iter(tfds.builder_from_directory(out).as_dataset(split="train")))
  assert example["image"].shape == (24, 20, 3)


def test_folder_source_with_split_folders_and_png(tmp_path):
  root = tmp_path / "gender"
  for split, n in (("Training", 6), ("Validation", 2)):
    for cls in ("female", "male"):
      for i in range(n):
        write_jpeg(str(root / split / cls / f"{i}.jpg"), seed=i)
  png = root / "Training" / "male" / "extra.png"
  png.write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
  out = str(tmp_path / "out")
  manifest = shard_dataset(ShardConfig("folder", str(root), out))
  assert manifest["class_names"] == ["female", "male"]
  assert manifest["splits"]["train"]["class_counts"] == {"female": 6, "male": 7}
  assert manifest["splits"]["validation"]["num_examples"] == 4
  labels = [int(e["label"]) for e in tfds.builder_from_directory(out).as_dataset(split="train")]
  assert sorted(labels) == [0] * 6 + [1] * 7


def test_sideways_phone_photos_are_stored_upright(tmp_path):
  from PIL import Image

  root = tmp_path / "gender"
  # A smooth gradient survives JPEG re-encoding within a few levels.
  y, x = np.mgrid[0:24, 0:40]
  pixels = np.stack([x * 6, y * 10, 255 - x * 6], -1).astype(np.uint8)
  for cls in ("female", "male"):
    for i in range(3):
      write_jpeg(str(root / cls / f"{i}.jpg"), seed=i, size=(40, 24))
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
  Image.fromarray(pixels).save(root / "male" / "phone.jpg", exif=exif.tobytes(), quality=98)
  out = str(tmp_path / "out")
  manifest = shard_dataset(ShardConfig("folder", str(root), out, validation_fraction=0.0))
  assert manifest["image_shape"] == [40, 24, 3]  # the phone photo counts as upright 40x24
  stored = [e["image"].numpy() for e in tfds.builder_from_directory(out).as_dataset(split="train")
            if e["file_name"].numpy().decode().endswith("phone.jpg")]
  assert len(stored) == 1 and stored[0].shape == (40, 24, 3)
  def error(expected):
    return np.abs(stored[0].astype(float) - expected).mean()

  # Two JPEG generations blur chroma edges by a few levels; a wrong turn is far off.
  assert error(np.rot90(pixels, -1)) < 5.0 < 25.0 < error(np.rot90(pixels, 1))


def test_folder_source_per_identity_gets_seeded_split(tmp_path):
  root = tmp_path / "pins"
  for person in ("pins_Ada", "pins_Bob", "pins_Cy"):
    for i in range(10):
      write_jpeg(str(root / person / f"{i}.jpg"), seed=i)
  a = shard_dataset(ShardConfig("folder", str(root), str(tmp_path / "a"), seed=1,
                                validation_fraction=0.2, test_fraction=0.1))
  assert {s: v["num_examples"] for s, v in a["splits"].items()} == {
      "train": 21, "validation": 6, "test": 3}
  b = shard_dataset(ShardConfig("folder", str(root), str(tmp_path / "b"), seed=1,
                                validation_fraction=0.2, test_fraction=0.1))
  assert shard_bytes(str(tmp_path / "a")) == shard_bytes(str(tmp_path / "b"))


@pytest.mark.slow
def test_killed_run_resumes_byte_identical(celeba_dir, celeba_shards, tmp_path):
  """kill -9 a real sharding process mid-run, rerun the same command, compare bytes."""
  big = str(tmp_path / "big")
  from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba
  write_synthetic_celeba(SyntheticConfig(big, num_examples={"train": 1200, "validation": 40},
                                         image_size=(64, 52)))
  out, reference = str(tmp_path / "out"), str(tmp_path / "reference")
  cmd = [sys.executable, "-m", "tfrecords.shard", "--source=celeba", f"--data_dir={big}",
         "--num_shards=24", "--image_size=48,40"]
  proc = subprocess.Popen(cmd + [f"--output_dir={out}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  plan = os.path.join(out, PLAN_FILE)
  import time
  deadline = time.time() + 60
  while time.time() < deadline and len([n for n in (os.listdir(out) if os.path.exists(out) else [])
                                        if n.endswith("-of-00024")]) < 3:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  assert os.path.exists(plan) and not os.path.exists(os.path.join(out, schema.MANIFEST))
  subprocess.run(cmd + [f"--output_dir={out}"], check=True, capture_output=True)
  subprocess.run(cmd + [f"--output_dir={reference}"], check=True, capture_output=True)
  assert shard_bytes(out) == shard_bytes(reference)


def test_output_names_never_come_from_input_names(tmp_path):
  root = tmp_path / "src"
  for cls in ("celeb_a-train.tfrecord-00000-of-00001", "manifest.json"):  # hostile class names
    for i in range(4):
      write_jpeg(str(root / cls / f"..{i}.tfrecord.jpg"), seed=i)
  out = tmp_path / "out"
  out.mkdir()
  (out / "notes.tmp").write_text("someone else's")  # a rerun's cleanup must leave it alone
  manifest = shard_dataset(ShardConfig("folder", str(root), str(out), validation_fraction=0.25,
                                       test_fraction=0.0))
  shards = {s["file"] for split in manifest["splits"].values() for s in split["shards"]}
  assert all(re.fullmatch(r"image_folder-(train|validation)\.tfrecord-\d{5}-of-\d{5}", n)
             for n in shards)
  assert set(os.listdir(out)) == shards | {schema.MANIFEST, PLAN_FILE, "dataset_info.json",
                                           "features.json", "label.labels.txt", "notes.tmp"}


def test_partition_without_train_is_sharded_for_evaluation(validation_only_shards):
  manifest = json.load(open(os.path.join(validation_only_shards, schema.MANIFEST)))
  assert list(manifest["splits"]) == ["validation"] and manifest["identities"] == []
  validation = manifest["splits"]["validation"]
  assert validation["num_examples"] == 160 and len(validation["shards"]) == 2  # --num_shards
  builder = tfds.builder_from_directory(validation_only_shards)
  assert list(builder.info.splits) == ["validation"]
  assert len(list(builder.as_dataset(split="validation"))) == 160


@pytest.mark.parametrize("code,split", [("1", "validation"), ("2", "test")])
def test_balanced_subset_of_a_partition_without_train(celeba_dir, tmp_path, code, split):
  d = copy_tree(celeba_dir, tmp_path / "c")
  mark_partition(d, code)
  manifest = shard_dataset(ShardConfig("celeba", d, str(tmp_path / "out"), max_examples=40,
                                       balance_by="Male", seed=1))
  assert list(manifest["splits"]) == [split]
  assert manifest["splits"][split]["class_counts"]["Male"] == {"0": 20, "1": 20}


def test_no_examples_at_all_is_refused(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  for image in os.listdir(os.path.join(d, "img_align_celeba")):
    open(os.path.join(d, "img_align_celeba", image), "wb").close()  # every image empty
  with pytest.raises(ShardingError, match="no examples after selection"):
    shard_dataset(ShardConfig("celeba", d, str(tmp_path / "out"), on_bad_image="skip"))
