"""The fault campaign: each scenario of issue 12 on real processes, one test per row.

The scenarios are slow (each starts TensorFlow processes, ~10 s apiece on 2 cores):
`make test-faults` (`pytest -m faults`), which CI runs after the suite. The kill -9 scenario
makes 3 kills here (the command's default is 10). The harness's own pieces are tested fast,
below, in the suite.
"""

from __future__ import annotations

import os

import pytest
import tensorflow as tf
from PIL import Image

from engine.bench.faults import SCENARIOS, FaultsConfig, Workspace, format_table, ordered_names
from engine.bench.faults.cli import write_huge_png
from engine.bench.faults.data import damage_record, record_offsets
from engine.bench.faults.process import ProcessResult, progress_step


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
  """The campaign's data and reference run, made once for every scenario of this file."""
  return Workspace(FaultsConfig(kills=3, timeout_s=240), str(tmp_path_factory.mktemp("faults")))


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("name", ordered_names())
def test_scenario(workspace, name):
  row = SCENARIOS.get(name).run(workspace)
  assert row.passed, f"{format_table([row.to_json()])}\n\n{row.detail}"


def test_every_item_of_the_issue_has_a_scenario():
  assert {SCENARIOS.get(name).item for name in ordered_names()} == set(range(1, 14))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damage_record_breaks_that_record_and_no_earlier_one(tmp_path, how):
  path = str(tmp_path / "records.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(5):
      writer.write(bytes([i]) * (100 + i))
  assert [length for _, length in record_offsets(path)] == [100, 101, 102, 103, 104]
  damage_record(path, 3, how)
  read = []
  with pytest.raises(tf.errors.DataLossError):
    for record in tf.data.TFRecordDataset(path):
      read.append(record.numpy())
  assert read == [bytes([i]) * (100 + i) for i in range(3)]


def test_huge_png_is_a_real_image_of_that_size_in_a_small_file(tmp_path, monkeypatch):
  path = str(tmp_path / "huge.png")
  write_huge_png(path, side=20_000)
  assert os.path.getsize(path) < 200_000
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's global: restored after
  with Image.open(path) as image:
    assert image.size == (20_000, 20_000)
    image.verify()  # every chunk's CRC and the compressed stream


def test_the_error_line_is_the_programs_not_tensorflows_banner():
  stderr = ("WARNING: All log messages before absl::InitializeLog() is called are written\n"
            "I0000 00:00:1796048447.451419   27271 port.cc:153] oneDNN custom operations are on.\n"
            "E0000 00:00:1796048455.714218   27292 cuda_platform.cc:52] failed call to cuInit\n"
            "launch.train: error: unknown flag --epochz (did you mean --epochs?)\n")
  result = ProcessResult(("python",), 2, "", stderr, 1.0)
  assert result.user_lines == [stderr.splitlines()[-1]]
  assert result.error_line().startswith("launch.train: error: unknown flag --epochz")
  assert not result.has_traceback
  assert progress_step("I1130 14:13:37.000055 1397 loop.py:425] step 7/24 epoch 0.58 loss") == 7
