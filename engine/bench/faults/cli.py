"""Faults in what the user types or points at: bad flags, a folder of broken images, a
directory without shards, a run without checkpoints (issue 12, items 10, 11, 13)."""

from __future__ import annotations

import os
import shutil
import struct
import zlib

from engine.bench.faults import expect
from engine.bench.faults.process import module_command
from engine.bench.faults.rows import Checks, Outcome, scenario
from engine.bench.faults.workspace import Workspace

_HUGE_SIDE = 20_000


def write_huge_png(path: str, side: int = _HUGE_SIDE) -> None:
  """A valid side x side 1-bit grayscale PNG of a few tens of KB (written row by row, so
  the 400-megapixel image never exists in memory here)."""
  def chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))
  compressor, row = zlib.compressobj(9), b"\x00" * (1 + (side + 7) // 8)  # filter 0, zeros
  body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
  header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def _image_folder(workspace: Workspace, folder: str) -> dict[str, str]:
  """Writes good and bad images into `folder`; returns {file name: "ok" | "error"}."""
  from PIL import Image
  faces = os.path.join(workspace.celeba_dir, "img_align_celeba")
  jpegs = sorted(os.listdir(faces))[:3]
  expected = {}
  for i, name in enumerate(jpegs):
    shutil.copy(os.path.join(faces, name), os.path.join(folder, f"good_{i}.jpg"))
    expected[f"good_{i}.jpg"] = "ok"
  with open(os.path.join(faces, jpegs[0]), "rb") as f:
    jpeg = f.read()
  with Image.open(os.path.join(faces, jpegs[1])) as image:
    image.save(os.path.join(folder, "face.png"))
  expected["face.png"] = "ok"  # a readable PNG is an image like any other
  with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
    f.write(jpeg[:len(jpeg) // 2])
  open(os.path.join(folder, "empty.jpg"), "wb").close()
  with open(os.path.join(folder, "notes.jpg"), "w") as f:
    f.write("these are my notes, not a photo\n")
  write_huge_png(os.path.join(folder, "huge.png"))
  expected.update({"truncated.jpg": "error", "empty.jpg": "error", "notes.jpg": "error",
                   "huge.png": "error"})
  return expected


@scenario("predict_broken_images", "predict: truncated, PNG, 0 B, 20000^2, text .jpg", 10)
def predict_broken_images(workspace: Workspace) -> Outcome:
  checks = Checks()
  folder = workspace.fresh_dir("predict_broken_images")
  expected = _image_folder(workspace, folder)
  result = workspace.run(module_command("launch.predict",
                                        f"--model_dir={workspace.reference.model_dir}", folder))
  rows: dict[str, list[str]] = {}
  for line in result.stdout.splitlines():
    fields = line.split("\t")
    if len(fields) >= 3 and os.path.basename(fields[0]) in expected:
      rows.setdefault(os.path.basename(fields[0]), []).append(fields[1])
  checks.expect(result.returncode is not None and result.returncode > 0,
                f"non-zero exit (got {result.returncode})")
  checks.expect(not result.has_traceback, "no traceback on stderr")
  for name, outcome in expected.items():
    got = rows.get(name, [])
    if not checks.expect(len(got) == 1, f"{name}: exactly one output row (got {len(got)})"):
      continue
    checks.expect((got[0] == "ERROR") == (outcome == "error"),
                  f"{name}: {'an ERROR row' if outcome == 'error' else 'predicted'} (got {got[0]})")
  if checks.failed:
    checks.note(workspace.shown(result.describe()) + "\n  stdout:\n    "
                + "\n    ".join(workspace.shown(result.stdout).splitlines()))
  errors = sum(v == ["ERROR"] for v in rows.values())
  sees = (f"{len(rows)} rows: {len(rows) - errors} predicted, {errors} ERROR "
          f"({', '.join(sorted(n for n, v in rows.items() if v == ['ERROR']))}); "
          f"exit {result.returncode}")
  return Outcome(sees, "none (other files predicted)", checks)


def _flag_mistake(workspace: Workspace, name: str, flags: tuple[str, ...],
                  *needles: str) -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir(name)
  result = workspace.run(workspace.train_command(model_dir, *flags))
  line = expect.clean_error(checks, result, *needles, exit_code=2, program="launch.train")
  extra = [l for l in result.user_lines if l != line]
  checks.expect(not extra, f"that is the only line on stderr (besides TensorFlow's start-up "
                f"banner); also: {extra[:2]}")
  checks.expect(not os.listdir(model_dir), "nothing written into --model_dir")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), "nothing written", checks)


@scenario("flagfile_missing", "--flagfile naming a missing file", 11)
def flagfile_missing(workspace: Workspace) -> Outcome:
  return _flag_mistake(workspace, "flagfile_missing", ("--flagfile=no_such_recipe.flags",),
                       "no_such_recipe.flags")


@scenario("flag_typo", "a mistyped flag: --epochz=3", 11)
def flag_typo(workspace: Workspace) -> Outcome:
  return _flag_mistake(workspace, "flag_typo", ("--epochz=3",), "--epochz", "--epochs")


@scenario("contradictory_flags", "--strategy=mirrored --cpu_devices=1", 11)
def contradictory_flags(workspace: Workspace) -> Outcome:
  return _flag_mistake(workspace, "contradictory_flags",
                       ("--strategy=mirrored", "--cpu_devices=1"), "--cpu_devices")


@scenario("fp16_on_this_cpu", "--precision=mixed_float16 on this CPU", 11)
def fp16_on_this_cpu(workspace: Workspace) -> Outcome:
  from engine.monitor.machine import cpu_flags
  if cpu_flags() & {"avx512_fp16", "amx_fp16"}:  # native float16: it must simply train
    checks = Checks()
    model_dir = workspace.fresh_dir("fp16_on_this_cpu")
    result = workspace.run(workspace.train_command(model_dir, "--precision=mixed_float16"))
    checks.expect(result.returncode == 0, f"trains (exit {result.returncode})")
    return Outcome(f"exit {result.returncode} (CPU has native float16)", "none", checks)
  return _flag_mistake(workspace, "fp16_on_this_cpu", ("--precision=mixed_float16",),
                       "--precision=mixed_float16")


def _one_line_refusal(workspace: Workspace, command: list[str], program: str,
                      *needles: str) -> Outcome:
  checks = Checks()
  result = workspace.run(command)
  line = expect.clean_error(checks, result, *needles, program=program)
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  return Outcome(workspace.shown(line), "none", checks)


def _run_without_checkpoints(workspace: Workspace, name: str) -> str:
  """A run directory with the reference's config.json and nothing else."""
  model_dir = workspace.fresh_dir(name)
  shutil.copy(os.path.join(workspace.reference.model_dir, "config.json"), model_dir)
  return model_dir


@scenario("evaluate_without_shards", "evaluate: --data_dir without shards", 13)
def evaluate_without_shards(workspace: Workspace) -> Outcome:
  empty = workspace.fresh_dir("evaluate_without_shards")
  return _one_line_refusal(workspace, workspace.evaluate_command(
      workspace.reference.model_dir, f"--data_dir={empty}"), "launch.evaluate", empty)


@scenario("evaluate_without_checkpoints", "evaluate: a run without checkpoints", 13)
def evaluate_without_checkpoints(workspace: Workspace) -> Outcome:
  model_dir = _run_without_checkpoints(workspace, "evaluate_without_checkpoints")
  return _one_line_refusal(workspace, workspace.evaluate_command(model_dir, "--checkpoint=latest"),
                           "launch.evaluate", model_dir)


@scenario("predict_without_checkpoints", "predict: a run without checkpoints", 13)
def predict_without_checkpoints(workspace: Workspace) -> Outcome:
  model_dir = _run_without_checkpoints(workspace, "predict_without_checkpoints")
  face = os.path.join(workspace.celeba_dir, "img_align_celeba",
                      sorted(os.listdir(os.path.join(workspace.celeba_dir, "img_align_celeba")))[0])
  return _one_line_refusal(workspace, module_command("launch.predict", f"--model_dir={model_dir}",
                                                     face), "launch.predict", model_dir)
