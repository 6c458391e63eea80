"""Faults in the data: damaged TFRecord shards, shards that no longer match manifest.json,
annotation files pointing outside the data set, a held-out set without a training
partition (issue 12, items 4, 5, 9, 12)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

from engine.bench.faults import expect
from engine.bench.faults.expect import last_step
from engine.bench.faults.process import module_command
from engine.bench.faults.rows import Checks, Outcome, scenario
from engine.bench.faults.workspace import Workspace, files_under, latest_checkpoint, read_json

_DAMAGED_RECORD = 3  # counted from 0 in its shard
_FRAME_HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length
_FRAME_FOOTER_BYTES = 4  # uint32 masked CRC of the data


def record_offsets(path: str) -> list[tuple[int, int]]:
  """(offset of its data, data length) for every record of a TFRecord file."""
  with open(path, "rb") as f:
    blob = f.read()
  records, offset = [], 0
  while offset + _FRAME_HEADER_BYTES <= len(blob):
    (length,) = struct.unpack("<Q", blob[offset:offset + 8])
    records.append((offset + _FRAME_HEADER_BYTES, length))
    offset += _FRAME_HEADER_BYTES + length + _FRAME_FOOTER_BYTES
  return records


def flip_bytes(path: str, offset: int, count: int = 4) -> None:
  """XORs `count` bytes at `offset` with 0xFF (the size stays; the data CRC breaks)."""
  with open(path, "r+b") as f:
    f.seek(offset)
    data = f.read(count)
    f.seek(offset)
    f.write(bytes(b ^ 0xFF for b in data))


def damage_record(path: str, index: int, how: str) -> None:
  """Flips bytes in the middle of record `index` ("flip"), or cuts the file there ("truncate")."""
  start, length = record_offsets(path)[index]
  if how == "flip":
    flip_bytes(path, start + length // 2)
  else:
    os.truncate(path, start + length // 2)


def refresh_manifest_entry(data_dir: str, file_name: str) -> None:
  """Rewrites the shard's size and digests in manifest.json, so that only the reader's
  CRCs can find its damage (the in-flight path, not the pre-run check)."""
  from engine.data import integrity
  path = os.path.join(data_dir, "manifest.json")
  manifest = read_json(path)
  shard_path = os.path.join(data_dir, file_name)
  for split in manifest["splits"].values():
    for shard in split["shards"]:
      if shard["file"] == file_name:
        shard["bytes"] = os.path.getsize(shard_path)
        shard["sha256"] = integrity.file_sha256(shard_path)
        if integrity.HEAD_TAIL_KEY in shard:
          shard[integrity.HEAD_TAIL_KEY] = integrity.head_tail_sha256(shard_path)
  with open(path, "w") as f:
    json.dump(manifest, f, indent=2)


def shard_files(data_dir: str, split: str) -> list[str]:
  """The file names of `split`'s shards, in manifest order."""
  manifest = read_json(os.path.join(data_dir, "manifest.json"))
  return [shard["file"] for shard in manifest["splits"][split]["shards"]]


def _copy_shards(workspace: Workspace, name: str, source: str | None = None) -> str:
  out = workspace.fresh_dir(name)
  shutil.copytree(source or workspace.shards, out, dirs_exist_ok=True)
  return out


def _damaged_copy(workspace: Workspace, name: str, split: str, shard_index: int,
                  how: str) -> tuple[str, str]:
  """A copy of the shards with one record of one shard damaged and the manifest refreshed;
  returns (data_dir, the damaged shard's file name)."""
  data_dir = _copy_shards(workspace, name + "_shards")
  file_name = shard_files(data_dir, split)[shard_index]
  damage_record(os.path.join(data_dir, file_name), _DAMAGED_RECORD, how)
  refresh_manifest_entry(data_dir, file_name)
  return data_dir, file_name


def _damaged_shard_in_training(workspace: Workspace, name: str, how: str) -> Outcome:
  checks = Checks()
  data_dir, file_name = _damaged_copy(workspace, name, "train", 1, how)
  model_dir = workspace.fresh_dir(name)
  result = workspace.run(workspace.train_command(model_dir, data_dir=data_dir))
  line = expect.clean_error(checks, result, file_name, f"record {_DAMAGED_RECORD}")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), expect.steps_lost(result, model_dir), checks)


@scenario("corrupt_record_in_training", "flipped bytes in a train record (training)", 4)
def corrupt_record_in_training(workspace: Workspace) -> Outcome:
  return _damaged_shard_in_training(workspace, "corrupt_record_in_training", "flip")


@scenario("truncated_shard_in_training", "train shard truncated mid-record (training)", 4)
def truncated_shard_in_training(workspace: Workspace) -> Outcome:
  return _damaged_shard_in_training(workspace, "truncated_shard_in_training", "truncate")


@scenario("corrupt_record_in_evaluation", "flipped bytes in a validation record (evaluate)",
          4)
def corrupt_record_in_evaluation(workspace: Workspace) -> Outcome:
  checks = Checks()
  data_dir, file_name = _damaged_copy(workspace, "corrupt_record_in_evaluation", "validation",
                                      0, "flip")
  result = workspace.run(workspace.evaluate_command(workspace.reference.model_dir,
                                                    f"--data_dir={data_dir}"))
  line = expect.clean_error(checks, result, file_name, f"record {_DAMAGED_RECORD}")
  checks.expect("accuracy" not in result.stdout, "no metrics printed for the partial split")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), "none (nothing reported)", checks)


@scenario("corrupt_record_skipped_in_training", "train record flipped, --on_bad_record=skip", 4)
def corrupt_record_skipped_in_training(workspace: Workspace) -> Outcome:
  checks = Checks()
  data_dir, file_name = _damaged_copy(workspace, "corrupt_record_skipped_in_training", "train",
                                      1, "flip")
  model_dir = workspace.fresh_dir("corrupt_record_skipped_in_training")
  result = workspace.run(workspace.train_command(model_dir, "--on_bad_record=skip",
                                                 data_dir=data_dir))
  named = [line for line in result.user_lines if file_name in line]
  checks.expect(result.returncode == 0, f"training finishes (exit {result.returncode})")
  checks.expect(bool(named), f"a log line names the skipped shard {file_name} (and what of it "
                "was skipped)")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  messages = [line.split("] ", 1)[-1] for line in named or result.user_lines]
  skip_lines = [m for m in messages if file_name in m
                or re.search(r"(corrupted|truncated) record|(?<![\w/])skipped\b", m)]
  if result.returncode != 0:
    sees = result.error_line()
  else:
    sees = f"exit 0; log: {skip_lines[0] if skip_lines else 'nothing about the bad record'}"
  lost = (f"records {_DAMAGED_RECORD}.. of {file_name.split('.tfrecord-')[-1]} (no resync)"
          if result.returncode == 0 else "-")
  return Outcome(workspace.shown(sees), lost, checks)


@scenario("corrupt_record_skipped_in_evaluation",
          "validation record flipped, --on_bad_record=skip", 4)
def corrupt_record_skipped_in_evaluation(workspace: Workspace) -> Outcome:
  checks = Checks()
  data_dir, file_name = _damaged_copy(workspace, "corrupt_record_skipped_in_evaluation",
                                      "validation", 0, "flip")
  report_path = os.path.join(data_dir, "report.json")
  result = workspace.run(workspace.evaluate_command(
      workspace.reference.model_dir, f"--data_dir={data_dir}", "--on_bad_record=skip",
      f"--output_json={report_path}"))
  report = read_json(report_path) or {}
  expected = read_json(os.path.join(data_dir, "manifest.json"))["splits"]["validation"]
  evaluated, skipped = report.get("num_examples"), report.get("skipped_examples")
  checks.expect(result.returncode == 0, f"launch.evaluate finishes (exit {result.returncode})")
  checks.expect(evaluated is not None and evaluated < expected["num_examples"]
                and skipped == expected["num_examples"] - evaluated,
                f"the report counts the skipped examples ({evaluated} evaluated + {skipped} "
                f"skipped vs the manifest's {expected['num_examples']})")
  said = [match[0] for match in map(re.compile(
      rf"\d+ examples of the manifest's {expected['num_examples']}( \([^)]*\))?").search,
      result.stdout.splitlines()) if match]
  checks.expect(bool(said), "the printed report says it is on fewer examples than the manifest's")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  sees = f"exit 0; the report is on {said[0]}" if said else result.error_line()
  lost = (f"{skipped} of {expected['num_examples']} examples, said in the report" if skipped
          else "-")
  return Outcome(workspace.shown(sees), lost, checks)


@scenario("shard_sha256_mismatch", "shard bytes changed vs manifest.json (fast check)", 5)
def shard_sha256_mismatch(workspace: Workspace) -> Outcome:
  checks = Checks()
  data_dir = _copy_shards(workspace, "shard_sha256_mismatch_shards")
  file_name = shard_files(data_dir, "train")[0]
  start, length = record_offsets(os.path.join(data_dir, file_name))[1]
  flip_bytes(os.path.join(data_dir, file_name), start + length // 2, count=1)
  return _refused_before_training(workspace, checks, "shard_sha256_mismatch", data_dir, file_name)


@scenario("shard_sha256_full_verify", "byte changed mid-shard (--verify_shards=full)", 5)
def shard_sha256_full_verify(workspace: Workspace) -> Outcome:
  from engine.data import integrity
  checks = Checks()
  # One train shard of ~240 KB: its middle lies outside the first/last 64 KiB.
  data_dir = _copy_shards(workspace, "shard_sha256_full_verify_shards",
                          workspace.shard(workspace.celeba_dir, "one_train_shard", 1))
  file_name = shard_files(data_dir, "train")[0]
  path = os.path.join(data_dir, file_name)
  before = integrity.head_tail_sha256(path)
  flip_bytes(path, os.path.getsize(path) // 2, count=1)
  if not checks.expect(integrity.head_tail_sha256(path) == before and
                       os.path.getsize(path) > 2 * integrity.HEAD_TAIL_BYTES,
                       "harness: the changed byte lies outside the fast check's ends"):
    return Outcome("(harness)", "?", checks)
  return _refused_before_training(workspace, checks, "shard_sha256_full_verify", data_dir,
                                  file_name, "--verify_shards=full")


def _refused_before_training(workspace: Workspace, checks: Checks, name: str, data_dir: str,
                             file_name: str, *flags: str) -> Outcome:
  model_dir = workspace.fresh_dir(name)
  result = workspace.run(workspace.train_command(model_dir, *flags, data_dir=data_dir))
  line = expect.clean_error(checks, result, file_name, "manifest.json")
  checks.expect(last_step(result) == 0, f"refused before step 1 (reached step {last_step(result)})")
  checks.expect(latest_checkpoint(model_dir) is None, "no checkpoint written")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), "none (refused before step 1)", checks)


def _rewrite_names(celeba_dir: str, old: str, new: str, files: tuple[str, ...]) -> None:
  """Replaces the image name `old` by `new` in the given annotation files."""
  for name in files:
    path = os.path.join(celeba_dir, name)
    with open(path) as f:
      lines = f.read().split("\n")
    lines = [" ".join([new, *line.split()[1:]]) if line.split()[:1] == [old] else line
             for line in lines]
    with open(path, "w") as f:
      f.write("\n".join(lines))


_ANNOTATIONS = ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
                "list_landmarks_align_celeba.txt")


def _sharder_refuses(workspace: Workspace, name: str, bad_name: str, files: tuple[str, ...],
                     named_file: str) -> Outcome:
  """A CelebA copy whose `files` name `bad_name` (a real JPEG outside the directory) where
  they named the first image: the sharder must refuse, naming `named_file` and its line."""
  checks = Checks()
  area = workspace.fresh_dir(name)
  celeba_dir = os.path.join(area, "celeba")
  shutil.copytree(workspace.celeba_dir, celeba_dir)
  first = sorted(os.listdir(os.path.join(celeba_dir, "img_align_celeba")))[0]
  target = os.path.normpath(os.path.join(celeba_dir, "img_align_celeba", bad_name))
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.copy(os.path.join(celeba_dir, "img_align_celeba", first), target)  # readable if followed
  _rewrite_names(celeba_dir, first, bad_name, files)
  output_dir = os.path.join(area, "shards")
  before = files_under(area)
  result = workspace.run(module_command("tfrecords.shard", "--source=celeba",
                                        f"--data_dir={celeba_dir}", f"--output_dir={output_dir}",
                                        "--num_shards=2"))
  line = expect.clean_error(checks, result, f"{named_file}:")
  checks.expect(any(w in line for w in ("outside", "absolute", "'..'")),
                "the error says the name leaves the data set")
  written = files_under(area) - before
  outside = sorted(f for f in written if not f.startswith("shards" + os.sep))
  checks.expect(not outside, f"nothing written outside --output_dir ({outside[:3]})")
  shards = sorted(f for f in written if ".tfrecord" in f or f.endswith("manifest.json"))
  checks.expect(not shards, f"no shard or manifest in --output_dir ({shards[:3]})")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), "nothing written", checks)


@scenario("sharder_parent_path", "`../` image name in list_attr_celeba.txt", 9)
def sharder_parent_path(workspace: Workspace) -> Outcome:
  return _sharder_refuses(workspace, "sharder_parent_path", "../../outside/face.jpg",
                          _ANNOTATIONS, "list_attr_celeba.txt")


@scenario("sharder_absolute_path", "absolute image name in list_eval_partition.txt", 9)
def sharder_absolute_path(workspace: Workspace) -> Outcome:
  bad = os.path.join(workspace.root, "sharder_absolute_path", "elsewhere", "face.jpg")
  return _sharder_refuses(workspace, "sharder_absolute_path", bad, ("list_eval_partition.txt",),
                          "list_eval_partition.txt")


def _validation_only_copy(source: str, out: str) -> int:
  """`source` reduced to its validation partition (CelebA code 1); returns its size."""
  with open(os.path.join(source, "list_eval_partition.txt")) as f:
    keep = {fields[0] for fields in map(str.split, f) if fields[1:] == ["1"]}
  os.makedirs(os.path.join(out, "img_align_celeba"))
  for name in keep:
    shutil.copy(os.path.join(source, "img_align_celeba", name),
                os.path.join(out, "img_align_celeba", name))
  for name in _ANNOTATIONS:
    with open(os.path.join(source, name)) as f:
      lines = f.read().splitlines()
    counted = name in ("list_attr_celeba.txt", "list_landmarks_align_celeba.txt")  # count, header
    rows = [line for line in lines[2 if counted else 0:] if line.split()[:1]
            and line.split()[0] in keep]
    head = [str(len(rows)), lines[1]] if counted else []
    with open(os.path.join(out, name), "w") as f:
      f.write("\n".join(head + rows) + "\n")
  return len(keep)


@scenario("validation_only_directory", "CelebA directory with only a validation partition",
          12)
def validation_only_directory(workspace: Workspace) -> Outcome:
  checks = Checks()
  area = workspace.fresh_dir("validation_only_directory")
  celeba_dir, shards = os.path.join(area, "celeba"), os.path.join(area, "shards")
  count = _validation_only_copy(workspace.celeba_dir, celeba_dir)
  sharded = workspace.run(module_command("tfrecords.shard", "--source=celeba",
                                         f"--data_dir={celeba_dir}", f"--output_dir={shards}"))
  manifest = read_json(os.path.join(shards, "manifest.json")) or {}
  if not checks.expect(sharded.returncode == 0,
                       f"the sharder shards it (exit {sharded.returncode})"):
    checks.note(workspace.shown(sharded.describe()))
    return Outcome(workspace.shown(sharded.error_line()), "-", checks)
  checks.expect(list(manifest.get("splits", {})) == ["validation"],
                f"its manifest has the validation split only ({list(manifest.get('splits', {}))})")
  report_path = os.path.join(area, "report.json")
  evaluated = workspace.run(workspace.evaluate_command(
      workspace.reference.model_dir, f"--data_dir={shards}", f"--output_json={report_path}"))
  report = read_json(report_path) or {}
  checks.expect(evaluated.returncode == 0, f"launch.evaluate evaluates it (exit "
                f"{evaluated.returncode})")
  checks.expect(report.get("num_examples") == count,
                f"on all {count} examples (report: {report.get('num_examples')})")
  if checks.failed:
    checks.note(workspace.shown(evaluated.describe()))
  accuracy = (report.get("metrics") or {}).get("accuracy")
  sees = (f"sharded {count} validation faces; evaluated {report.get('num_examples')} examples, "
          f"accuracy {accuracy:.3f}" if accuracy is not None else workspace.shown(
              evaluated.error_line()))
  return Outcome(sees, "none", checks)
