import json
import os
import shutil
import time

import pytest

from engine.data import integrity, schema
from engine.data.integrity import ShardIntegrityError, verify_shards
from engine.data.manifest import read_manifest, split_files
from engine.data.sharding import ShardConfig, shard_dataset
from tests.engine.data.damage import flip_byte, record_starts


@pytest.fixture(scope="module")
def one_train_shard(celeba_dir, tmp_path_factory) -> str:
  """`celeba_dir` in one train shard of ~250 KB: larger than the fast check's two ends."""
  out = str(tmp_path_factory.mktemp("one_shard"))
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=1))
  return out


def _copy(shards: str, tmp_path) -> tuple[str, dict, str]:
  """A private copy of a shard directory; returns it, its manifest and its train shard."""
  out = str(tmp_path / "shards")
  shutil.copytree(shards, out)
  manifest = read_manifest(out)
  return out, manifest, os.path.join(out, manifest["splits"]["train"]["shards"][0]["file"])


def test_clean_shards_pass_fast_and_full(celeba_shards, caplog):
  manifest = read_manifest(celeba_shards)
  caplog.set_level("INFO")
  verify_shards(celeba_shards, manifest)
  count = sum(len(split["shards"]) for split in manifest["splits"].values())
  assert f"{count} shard(s) of test, train, validation" in caplog.text
  assert "sizes + first/last 64 KiB" in caplog.text
  verify_shards(celeba_shards, manifest, ["validation"], full=True)
  assert "full SHA-256" in caplog.text


def test_truncated_shard_fails_the_fast_check_naming_it(celeba_shards, tmp_path):
  out, manifest, train = _copy(celeba_shards, tmp_path)
  size = os.path.getsize(train)
  os.truncate(train, size - 10)
  with pytest.raises(ShardIntegrityError, match=f"{train}: {size - 10} bytes, manifest.json says "
                     f"{size} \\(truncated") as error:
    verify_shards(out, manifest)
  assert error.value.problems == [(train, error.value.problems[0][1])]
  verify_shards(out, manifest, ["validation", "test"])  # other splits are not involved


def test_missing_shards_are_all_named(celeba_shards, tmp_path):
  out, manifest, train = _copy(celeba_shards, tmp_path)
  test_shard = os.path.join(out, manifest["splits"]["test"]["shards"][0]["file"])
  os.remove(train)
  os.remove(test_shard)
  count = sum(len(split["shards"]) for split in manifest["splits"].values())
  with pytest.raises(ShardIntegrityError, match=f"2 of {count} shard") as error:
    verify_shards(out, manifest)
  assert f"{train}: missing" in str(error.value) and f"{test_shard}: missing" in str(error.value)


def test_byte_flipped_mid_shard_passes_fast_and_fails_full(one_train_shard, tmp_path):
  out, manifest, train = _copy(one_train_shard, tmp_path)
  assert os.path.getsize(train) > 2 * integrity.HEAD_TAIL_BYTES
  flip_byte(train, os.path.getsize(train) // 2)
  verify_shards(out, manifest)  # same size, both ends intact: the reader's CRC catches it
  with pytest.raises(ShardIntegrityError, match=f"{train}: same size, but its SHA-256 differs"):
    verify_shards(out, manifest, full=True)


@pytest.mark.parametrize("where", ["head", "tail"])
def test_byte_flipped_near_either_end_fails_fast(one_train_shard, tmp_path, where):
  out, manifest, train = _copy(one_train_shard, tmp_path)
  flip_byte(train, 100 if where == "head" else os.path.getsize(train) - 100)
  with pytest.raises(ShardIntegrityError, match=f"{train}: same size, but its first/last 64 KiB"):
    verify_shards(out, manifest)


def test_manifest_without_head_tail_digests_is_checked_by_size(celeba_shards, tmp_path, caplog):
  """Manifests of earlier sharders lack the field: the fast check falls back to sizes."""
  out, manifest, train = _copy(celeba_shards, tmp_path)
  for split in manifest["splits"].values():
    for shard in split["shards"]:
      del shard[integrity.HEAD_TAIL_KEY]
  with open(os.path.join(out, schema.MANIFEST), "w") as f:
    json.dump(manifest, f)
  flip_byte(train, 100)
  caplog.set_level("INFO")
  verify_shards(out, read_manifest(out))
  assert "sizes only" in caplog.text
  with pytest.raises(ShardIntegrityError, match="SHA-256 differs"):
    verify_shards(out, read_manifest(out), full=True)


def test_fast_check_reads_only_the_ends_of_a_celeba_sized_shard(tmp_path):
  """A sparse 1.4 GB file (all of CelebA in one shard) is checked in milliseconds."""
  path = tmp_path / "celeb_a-train.tfrecord-00000-of-00001"
  size = 1_400_000_000
  with open(path, "wb") as f:
    f.write(b"head")
    f.truncate(size)
  manifest = {"splits": {"train": {"shards": [{
      "file": path.name, "bytes": size, "sha256": "not read by the fast check",
      integrity.HEAD_TAIL_KEY: integrity.head_tail_sha256(str(path))}]}}}
  start = time.perf_counter()
  verify_shards(str(tmp_path), manifest)
  assert time.perf_counter() - start < 0.5  # hashing 1.4 GB takes seconds


def test_unknown_split_and_paths_outside_the_directory_are_refused(celeba_shards):
  manifest = read_manifest(celeba_shards)
  with pytest.raises(ValueError, match=r"no split\(s\) \['dev'\]"):
    verify_shards(celeba_shards, manifest, ["dev"])
  bad = json.loads(json.dumps(manifest))
  bad["splits"]["train"]["shards"][0]["file"] = "../elsewhere"
  with pytest.raises(ShardIntegrityError, match="'../elsewhere' of split train is not a plain"):
    verify_shards(celeba_shards, bad)


def test_locate_names_the_shard_and_record_of_a_flipped_byte(celeba_shards, tmp_path):
  out, manifest, _ = _copy(celeba_shards, tmp_path)
  files = split_files(out, manifest, "train")
  assert integrity.locate_corrupt_record(files) is None
  flip_byte(files[2], record_starts(files[2])[5] + 12 + 40)  # inside record 5's data
  path, index, message = integrity.locate_corrupt_record(files)
  assert (path, index) == (files[2], 5)
  assert message.startswith("corrupted record at") and "Op:" not in message


def test_locate_names_the_record_a_truncation_cut(celeba_shards, tmp_path):
  out, manifest, _ = _copy(celeba_shards, tmp_path)
  files = split_files(out, manifest, "validation")
  os.truncate(files[-1], record_starts(files[-1])[3] + 30)
  path, index, message = integrity.locate_corrupt_record(files)
  assert (path, index) == (files[-1], 3) and message.startswith("truncated record at")


def test_data_loss_while_reading_becomes_an_error_naming_the_shard(celeba_shards, tmp_path):
  import tensorflow as tf

  from engine.data.pipeline import make_dataset
  from engine.config import InputConfig

  out, manifest, _ = _copy(celeba_shards, tmp_path)
  files = split_files(out, manifest, "validation")
  flip_byte(files[1], record_starts(files[1])[2] + 12 + 40)
  dataset = make_dataset(InputConfig(out, split="validation", training=False, image_size=(16, 16),
                                     global_batch_size=8))
  with pytest.raises(tf.errors.DataLossError, match="corrupted record") as raised:
    list(dataset)
  error = integrity.corrupt_record_error(out, manifest, "validation", raised.value)
  assert isinstance(error, ShardIntegrityError)
  assert str(error).startswith(f"{files[1]}: record 2 (counted from 0) is unreadable: corrupted "
                               "record at")
  shutil.copy(os.path.join(celeba_shards, os.path.basename(files[1])), files[1])  # repaired
  assert "rescan read every record" in str(
      integrity.corrupt_record_error(out, manifest, "validation", raised.value))


def test_locate_counts_records_past_the_first_scan_batches(tmp_path):
  import tensorflow as tf

  clean, damaged = str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")
  for path in (clean, damaged):
    with tf.io.TFRecordWriter(path) as writer:
      for i in range(2500):
        writer.write(f"record {i}".encode())
  flip_byte(damaged, record_starts(damaged)[2100] + 12 + 3)
  assert integrity.locate_corrupt_record([clean, damaged])[:2] == (damaged, 2100)
