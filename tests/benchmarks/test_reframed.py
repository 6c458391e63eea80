"""benchmarks.reframed: the split's faces written as re-framed photos, scored through predict."""

import os

import numpy as np
import pytest
import tensorflow as tf

from engine.bench.reframed import ReframedConfig, run_reframed, score_predictions, write_reframed
from engine.data.pipeline import make_dataset
from engine.config import AugmentConfig, InputConfig
from engine.eval import faces, framing
from engine.tasks import TASKS
from tests.engine.eval.test_predict import _TemplateDetector, write_run_dir
from tests.launch.test_usage import assert_one_line_error, run

_CROP = (0.09, 0.0, 0.82, 1.0)


def test_clean_photos_are_the_evaluation_crop_and_shifted_ones_move(celeba_shards, tmp_path):
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards, crop_box=_CROP)
  config = ReframedConfig(model_dir, split="validation", work_dir=str(tmp_path / "photos"))
  files, labels = write_reframed(config, framing.FRAMINGS["clean"])
  evaluation = make_dataset(InputConfig(celeba_shards, split="validation", crop_box=_CROP,
                                        image_size=(32, 32), global_batch_size=64,
                                        training=False, output_dtype="float32"))
  (_, eval_labels, mask), = evaluation.take(1)
  assert len(files) == int(mask.numpy().sum()) == 32
  np.testing.assert_array_equal(labels, eval_labels.numpy()[:32])
  photo = tf.io.decode_jpeg(tf.io.read_file(files[0])).numpy().astype(float)
  shifted = tf.io.decode_jpeg(tf.io.read_file(write_reframed(
      config, framing.FRAMINGS["shift_left"])[0][0])).numpy().astype(float)
  assert photo.shape == shifted.shape  # the window's size: the face moves inside it
  # moving the window left by 8% of its width moves the face right by as many pixels
  step = round(0.08 * photo.shape[1])
  moved = np.abs(shifted[:, step + 2:-2] - photo[:, 2:-2 - step]).mean()
  assert moved < 6 and np.abs(shifted - photo).mean() > 3 * moved


def test_a_missed_face_counts_as_wrong():
  task = TASKS.get("attribute")
  ok = lambda male: {"status": "ok", "framing": "aligned", "warnings": [],  # noqa: E731
                     "probabilities": {"female": 1 - male, "male": male}}
  results = [ok(0.9), ok(0.2), {"status": "no_face", "framing": "aligned"}, ok(0.6)]
  scored = score_predictions(results, np.array([1, 0, 1, 0]), ["female", "male"], task)
  assert scored["accuracy"] == 0.5 and scored["no_face"] == 1 and scored["aligned"] == 4


def test_predict_with_its_defaults_aligns_every_photo_and_as_is_none(
    celeba_shards, tmp_path, monkeypatch):
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.95))
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards, crop_box=_CROP,
                            augment=AugmentConfig(zoom_range=(0.6, 1.7)))
  report = run_reframed(ReframedConfig(
      model_dir, split="validation", framings=("clean", "tight_1.3"), max_faces=8,
      work_dir=str(tmp_path / "photos"), output_json=str(tmp_path / "r.json")))
  assert [r["framing"] for r in report["rows"]] == ["clean", "tight_1.3"]
  for row in report["rows"]:
    assert row["default"]["faces"] == row["as_is"]["faces"] == 8
    assert row["default"]["aligned"] == row["unzoomed"]["aligned"] == 8
    assert row["as_is"]["aligned"] == 0
    # the stub's face hangs off these small photos: the default enlarges it, the baseline not
    assert row["default"]["zoomed"] == 8 and row["unzoomed"]["zoomed"] == 0
    assert 0.0 <= row["default"]["accuracy"] <= 1.0
  assert len(os.listdir(tmp_path / "photos" / "tight_1.3")) == 8
  assert "| tight_1.3 |" in report["markdown"] and (tmp_path / "r.json").exists()
  assert "aligned, not enlarged" in report["markdown"].splitlines()[0]


def test_modes_choose_the_passes_and_the_columns(celeba_shards, tmp_path, monkeypatch):
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.95))
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards, crop_box=_CROP)
  report = run_reframed(ReframedConfig(model_dir, split="validation", framings=("clean",),
                                       max_faces=4, work_dir=str(tmp_path / "photos"),
                                       modes=("default",)))
  (row,) = report["rows"]
  assert "default" in row and "unzoomed" not in row and "as_is" not in row
  header, rule, line = report["markdown"].splitlines()
  assert header.count("|") == rule.count("|") == line.count("|") == 5
  assert "as is" not in header and line.endswith(" / 0 of 4 |")
  with pytest.raises(ValueError, match="modes must be some of default, unzoomed, as_is, fallback"):
    run_reframed(ReframedConfig(model_dir, modes=("fit",)))
  with pytest.raises(ValueError, match="unknown framing 'tight2'; known: standard, clean, "):
    ReframedConfig(model_dir, framings=("clean", "tight2")).validate()


class _EveryOtherDetector(_TemplateDetector):
  """The stub's face in every other photo it is shown; none in the rest."""

  def __init__(self, score: float):
    super().__init__(score)
    self.calls = 0

  def detect(self, image):
    self.calls += 1
    return super().detect(image) if self.calls % 2 else []


def test_the_fallback_pass_predicts_missed_faces_as_they_are(celeba_shards, tmp_path,
                                                            monkeypatch):
  """Faces the detector misses count as wrong in the default pass and are predicted as the
  photo is in the fallback pass, which counts them; the faces found are aligned in both."""
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _EveryOtherDetector(0.95))
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards, crop_box=_CROP)
  report = run_reframed(ReframedConfig(model_dir, split="validation", framings=("clean",),
                                       max_faces=8, work_dir=str(tmp_path / "photos"),
                                       modes=("default", "fallback")))
  (row,) = report["rows"]
  assert (row["default"]["no_face"], row["default"]["unfaced"]) == (4, 0)
  assert (row["fallback"]["no_face"], row["fallback"]["unfaced"]) == (0, 4)
  assert row["fallback"]["aligned"] == 4
  assert row["fallback"]["accuracy"] >= row["default"]["accuracy"]  # only predictions added
  header, _, line = report["markdown"].splitlines()
  assert "--no_face=as_is" in header and line.endswith(f"({row['fallback']['unfaced']}) |")


def test_a_split_the_shards_lack_is_named(celeba_shards, tmp_path):
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards)
  with pytest.raises(ValueError, match="no split 'nope'"):
    write_reframed(ReframedConfig(model_dir, split="nope"), framing.FRAMINGS["clean"])


def test_a_command_line_mistake_is_one_line(tmp_path):
  """A model_dir that is no run: named in one line, exit 2, before any photo is written.
  (Every config mistake takes this path; the unknown framing's message is tested above.)"""
  missing = run("benchmarks.reframed", f"--model_dir={tmp_path / 'nope'}",
                f"--work_dir={tmp_path / 'photos'}")
  assert_one_line_error(missing, "benchmarks.reframed", f"{tmp_path / 'nope' / 'config.json'}: "
                        f"missing; is {tmp_path / 'nope'} a training run directory?")
  assert not (tmp_path / "photos").exists()
