"""engine.eval.predict on a tiny run directory and real image files."""

import csv
import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from engine.data.pipeline import make_dataset
from engine.config import AugmentConfig, ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.eval import faces
from engine.eval.artifact import PRECISIONS, labels_path
from engine.eval.evaluate import EvalConfig, evaluate
from engine.eval.export import export
from engine.eval.predict import MAX_IMAGE_PIXELS, PredictConfig, run_class_names, predict
from engine.models import build_model


def write_run_dir(model_dir, data_dir="/nonexistent/shards", backbone="tiny_resnet",
                  num_outputs=1, task="attribute", image_size=(32, 32), crop_box=None,
                  eval_flip=False, augment=AugmentConfig()) -> str:
  """A run directory as the trainer leaves it, with random non-trivial BN statistics
  (fresh ones are 0/1, which would hide a batch-norm mix-up)."""
  model_dir = str(model_dir)
  model_config = ModelConfig(backbone, image_size=image_size, num_outputs=num_outputs)
  experiment = ExperimentConfig(input=InputConfig(data_dir, task=task, image_size=image_size,
                                                  crop_box=crop_box, augment=augment),
                                model=model_config,
                                train=TrainConfig(model_dir=model_dir, eval_flip=eval_flip))
  os.makedirs(os.path.join(model_dir, "best"), exist_ok=True)
  with open(os.path.join(model_dir, "config.json"), "w") as f:
    f.write(experiment.to_json())
  model = build_model(model_config)
  rng = np.random.default_rng(0)
  for weight in model.weights:
    if "moving_variance" in weight.path:
      weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
    elif any(k in weight.path for k in ("moving_mean", "gamma", "beta")):
      weight.assign(weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32"))
  model.save_weights(os.path.join(model_dir, "best", "model.weights.h5"))
  return model_dir


def write_images(folder) -> list[str]:
  """Three real JPEGs and a PNG of different sizes, a corrupt .jpg and a text file."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(1)
  for i, (h, w) in enumerate([(40, 30), (64, 64), (50, 90)]):
    cv2.imwrite(os.path.join(folder, f"face{i}.jpg"), rng.integers(0, 256, (h, w, 3), np.uint8))
  cv2.imwrite(os.path.join(folder, "gray.png"), rng.integers(0, 256, (20, 24), np.uint8))
  with open(os.path.join(folder, "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image")
  return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n != "notes.txt")


def _png_header(width: int, height: int) -> bytes:
  """A PNG that states its size and ends after one row: what a size check must read."""
  def chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width))) + chunk(b"IEND", b""))


def _resized_jpeg(jpeg: bytes, height: int, width: int) -> bytes:
  """The JPEG with its frame header (SOF0) claiming another size; the data stays small."""
  data, pos = bytearray(jpeg), 2
  while data[pos + 1] != 0xC0:
    pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
  data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def write_problem_images(folder) -> dict[str, str | None]:
  """A folder as users leave them: {file name: expected error fragment, None = predicted}.

  A JPEG and a PNG that are fine, a truncated JPEG, an empty file, a text file named .jpg,
  and 20000x20000 images (400 MP, 1.2 GB decoded) that are a few hundred bytes on disk:
  a JPEG and a PNG whose headers state that size.
  """
  os.makedirs(folder, exist_ok=True)
  pixels = np.random.default_rng(3).integers(0, 256, (60, 50, 3), np.uint8)
  jpeg = cv2.imencode(".jpg", pixels)[1].tobytes()
  files = {"face.jpg": (jpeg, None),
           "face.png": (cv2.imencode(".png", pixels)[1].tobytes(), None),
           "cut.jpg": (jpeg[:len(jpeg) // 2], "not a readable image: truncated JPEG"),
           "empty.jpg": (b"", "not a readable image: empty file (0 bytes)"),
           "notes.jpg": (b"shopping list: milk, eggs\n", "not a readable image: not in an image "
                         "format"),
           "huge.jpg": (_resized_jpeg(jpeg, 20000, 20000), "20000x20000 pixels (400.0 MP) is "
                        f"over the limit of {MAX_IMAGE_PIXELS:,} pixels"),
           "huge.png": (_png_header(20000, 20000), "20000x20000 pixels (400.0 MP) is over the "
                        f"limit of {MAX_IMAGE_PIXELS:,} pixels")}
  for name, (data, _) in files.items():
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)
  return {name: expected for name, (_, expected) in files.items()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  return write_run_dir(tmp_path_factory.mktemp("run"))


def test_folder_with_a_corrupt_file(run_dir, tmp_path):
  files = write_images(tmp_path / "images")
  output = str(tmp_path / "preds.csv")
  results = predict(PredictConfig(run_dir, (str(tmp_path / "images"),), batch_size=3,
                                  output=output, detect_faces=False))
  assert [r["file"] for r in results] == files  # sorted, the .txt skipped
  by_name = {os.path.basename(r["file"]): r for r in results}
  broken = by_name.pop("broken.jpg")
  assert broken["status"] == "error" and "broken.jpg" in broken["message"]
  for result in by_name.values():  # 4 images: a full batch of 3 and a padded one
    assert result["status"] == "ok", result
    assert result["label"] in ("female", "male")
    probabilities = result["probabilities"]
    assert set(probabilities) == {"female", "male"}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert result["confidence"] == pytest.approx(probabilities[result["label"]])
    assert result["confidence"] >= 0.5
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert [row["file"] for row in rows] == files
  assert rows[0].keys() >= {"status", "label", "confidence", "p_female", "p_male", "message"}

  # The batch size (and so the padding) does not change an image's prediction.
  single = predict(PredictConfig(run_dir, tuple(files), batch_size=1, detect_faces=False))
  for a, b in zip(results, single):
    assert a["status"] == b["status"]
    if a["status"] == "ok":
      assert a["probabilities"]["male"] == pytest.approx(b["probabilities"]["male"], abs=1e-6)


def test_missing_paths_and_json_output(run_dir, tmp_path):
  write_images(tmp_path / "images")
  output = str(tmp_path / "out" / "preds.json")
  empty = tmp_path / "empty"
  empty.mkdir()
  results = predict(PredictConfig(run_dir, (str(tmp_path / "images" / "face0.jpg"),
                                            str(tmp_path / "nope.jpg"), str(empty)),
                                  output=output, detect_faces=False))
  assert [r["status"] for r in results] == ["ok", "error", "error"]
  assert "nope.jpg" in results[1]["message"] and "no images" in results[2]["message"]
  with open(output) as f:
    assert json.load(f) == results
  with pytest.raises(ValueError, match="must end in"):
    predict(PredictConfig(run_dir, ("x.jpg",), output=str(tmp_path / "preds.txt")))


@pytest.mark.parametrize("crop_box, atol", [(None, 1e-6), ((0.2, 0.1, 0.6, 0.8), 1e-3)])
def test_predictions_match_the_eval_pipeline(celeba_dir, celeba_shards, tmp_path, crop_box, atol):
  """The files predicted one by one give what the model gives on the eval pipeline's
  batch of the same images (the pipeline's order is shuffled: compared as sorted sets).
  With a crop box the pipeline decodes only the box (fused), prediction crops the decoded
  image: the same pixels up to the decoder's chroma upsampling at the box edge."""
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards, crop_box=crop_box)
  with open(os.path.join(celeba_dir, "list_eval_partition.txt")) as f:
    test_files = [os.path.join(celeba_dir, "img_align_celeba", line.split()[0])
                  for line in f if line.split()[1:] == ["2"]]
  results = predict(PredictConfig(model_dir, tuple(test_files), batch_size=8))
  from_files = sorted(r["probabilities"]["male"] for r in results)

  model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32)))
  model.load_weights(os.path.join(model_dir, "best", "model.weights.h5"))
  images, _, mask = next(iter(make_dataset(InputConfig(
      celeba_shards, split="test", image_size=(32, 32), global_batch_size=64, training=False,
      crop_box=crop_box))))
  logits = model(images, training=False).numpy()[mask.numpy() > 0, 0]
  assert len(results) == len(logits) == 32
  np.testing.assert_allclose(from_files, sorted(tf.sigmoid(logits).numpy()), atol=atol)


def test_a_folder_as_users_leave_it(run_dir, tmp_path):
  """One result per file: the good JPEG and PNG predicted, each bad file an error naming
  it and why, a huge image refused from its header (never decoded)."""
  expected = write_problem_images(tmp_path / "images")
  results = predict(PredictConfig(run_dir, (str(tmp_path / "images"),), batch_size=4,
                                  detect_faces=False))
  assert [os.path.basename(r["file"]) for r in results] == sorted(expected)
  for result in results:
    fragment = expected[os.path.basename(result["file"])]
    if fragment is None:
      assert result["status"] == "ok" and result["label"] in ("female", "male"), result
    else:
      assert result["status"] == "error", result
      assert result["message"].startswith(result["file"] + ": ") and fragment in result["message"]


def test_the_pixel_limit_must_be_positive():
  with pytest.raises(ValueError, match="max_image_pixels"):
    PredictConfig("run", ("x.jpg",), max_image_pixels=0).validate()


def _config(data_dir, task="attribute", attribute="Male", num_outputs=1):
  return ExperimentConfig(input=InputConfig(str(data_dir), task=task, label_attribute=attribute),
                          model=ModelConfig("tiny_resnet", num_outputs=num_outputs),
                          train=TrainConfig())


def test_class_names(celeba_shards, tmp_path):
  assert run_class_names(_config(celeba_shards)) == ["female", "male"]
  assert run_class_names(_config(celeba_shards, attribute="Smiling")) == ["not_Smiling", "Smiling"]
  assert run_class_names(_config(celeba_shards, "attributes", num_outputs=4)) == [
      "Eyeglasses", "Male", "Smiling", "Young"]
  assert run_class_names(_config(tmp_path / "gone")) == ["female", "male"]
  assert run_class_names(_config(tmp_path / "gone", "identity", num_outputs=3)) == ["0", "1", "2"]
  folder = tmp_path / "folder_shards"
  folder.mkdir()
  (folder / "manifest.json").write_text(json.dumps({"source": "folder",
                                                    "class_names": ["cat", "dog", "eel"]}))
  assert run_class_names(_config(folder, "identity", num_outputs=3)) == ["cat", "dog", "eel"]


def test_detect_faces_reports_no_face(run_dir, tmp_path):
  try:
    faces.make_detector()
  except ImportError as e:
    pytest.skip(str(e))
  files = write_images(tmp_path / "images")
  results = predict(PredictConfig(run_dir, tuple(files), detect_faces=True))
  statuses = {os.path.basename(r["file"]): r["status"] for r in results}
  assert statuses == {"broken.jpg": "error", "face0.jpg": "no_face", "face1.jpg": "no_face",
                      "face2.jpg": "no_face", "gray.png": "no_face"}
  assert all("no face" in r["message"] for r in results if r["status"] == "no_face")


@pytest.fixture(scope="module")
def cropped_run(celeba_dir, celeba_shards, tmp_path_factory):
  """A run with a crop box on real shards, its test faces, and what it predicts for them."""
  model_dir = write_run_dir(tmp_path_factory.mktemp("cropped"), data_dir=celeba_shards,
                            crop_box=(0.2, 0.1, 0.6, 0.8))
  folder = os.path.join(celeba_dir, "img_align_celeba")
  files = tuple(sorted(os.path.join(folder, n) for n in os.listdir(folder))[:6])
  return model_dir, files, predict(PredictConfig(model_dir, files, batch_size=4))


@pytest.mark.parametrize("format", ["tflite", "onnx", "openvino"])
def test_exported_artifact_predicts_what_the_run_predicts(cropped_run, tmp_path, format):
  """predict(model=ARTIFACT) runs the artifact's runtime with the crop, size and class
  names of its metadata: the run's own predictions (a skipped crop would change them),
  in each precision the runtime offers (bf16: 8-bit mantissas, so 2e-2)."""
  for package in {"onnx": ("tf2onnx", "onnxruntime"), "openvino": ("openvino",)}.get(format, ()):
    pytest.importorskip(package, reason=f"{format} needs {package} from the deploy extra")
  model_dir, files, expected = cropped_run
  name = {"tflite": "m.tflite", "onnx": "m.onnx", "openvino": "ov/m.xml"}[format]
  artifact = export(model_dir, format, str(tmp_path / name))
  for precision in PRECISIONS[format]:
    results = predict(PredictConfig(None, files, batch_size=4, model=artifact,
                                    runtime_precision=precision))
    assert [r["label"] for r in results] == [r["label"] for r in expected]
    atol = 2e-2 if precision == "bfloat16" else 1e-5
    for got, want in zip(results, expected):
      assert got["probabilities"]["male"] == pytest.approx(want["probabilities"]["male"],
                                                           abs=atol)


def test_predict_takes_a_run_or_an_artifact_not_both(tmp_path):
  with pytest.raises(ValueError, match="either a training run .* or an exported model"):
    PredictConfig("run", ("x.jpg",), model="m.onnx").validate()
  with pytest.raises(FileNotFoundError, match="m.onnx: no such exported model"):
    predict(PredictConfig(None, ("x.jpg",), model=str(tmp_path / "m.onnx")))


def _partition(celeba_dir, partition: str) -> tuple[list[str], list[int]]:
  """The image paths of a CelebA partition (1: validation) and their Male labels."""
  with open(os.path.join(celeba_dir, "list_attr_celeba.txt")) as f:
    lines = f.read().splitlines()
  column = lines[1].split().index("Male") + 1
  male = {line.split()[0]: int(line.split()[column] == "1") for line in lines[2:]}
  with open(os.path.join(celeba_dir, "list_eval_partition.txt")) as f:
    names = [line.split()[0] for line in f if line.split()[1:] == [partition]]
  return [os.path.join(celeba_dir, "img_align_celeba", n) for n in names], [male[n] for n in names]


def test_predict_on_the_validation_jpegs_reproduces_evaluate(celeba_dir, celeba_shards, tmp_path):
  """What a user gets from predict on the split's own files is what evaluate reports:
  same frame (taken as aligned: the training images' size), crop, resize and flip TTA."""
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards,
                            crop_box=(0.09, 0.0, 0.82, 1.0), eval_flip=True)
  report = evaluate(EvalConfig(model_dir, split="validation", batch_size=8))
  assert report["flip_tta"]
  files, labels = _partition(celeba_dir, "1")
  results = predict(PredictConfig(model_dir, tuple(files), batch_size=8))
  assert {r["framing"] for r in results} == {"as_is"}
  probs = np.array([[r["probabilities"]["female"], r["probabilities"]["male"]] for r in results])
  predicted = probs.argmax(axis=1)
  confusion = [[int(np.sum((np.array(labels) == t) & (predicted == p))) for p in (0, 1)]
               for t in (0, 1)]
  metrics = report["metrics"]
  assert len(results) == metrics["num_examples"] == 32
  assert confusion == metrics["confusion_matrix"]
  assert np.mean(predicted == labels) == metrics["accuracy"]
  loss = -np.log(np.clip(probs[np.arange(32), labels], 1e-7, 1.0)).mean()
  assert loss == pytest.approx(metrics["loss"], abs=1e-6)
  no_tta = predict(PredictConfig(model_dir, tuple(files[:4]), flip_tta=False))
  assert [r["probabilities"] for r in no_tta] != [r["probabilities"] for r in results[:4]]


class _TemplateDetector:
  """Finds one face, placed by CelebA's template scaled 1.5x at (40, 30), with `score`."""

  name = "stub"

  def __init__(self, score: float):
    self.score = score

  def detect(self, image):
    del image
    place = lambda x, y: (1.5 * x + 40.0, 1.5 * y + 30.0)  # noqa: E731
    x, y, w, h = faces.CELEBA_FACE_BOX
    return [faces.Detection((*place(x, y), 1.5 * w, 1.5 * h),
                            {n: place(*p) for n, p in faces.CELEBA_LANDMARKS.items()},
                            self.score)]


def test_alignment_measures_coverage_over_the_runs_crop_window(tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.99))
  real_align = faces.align_face
  monkeypatch.setattr(faces, "align_face",
                      lambda image, detector, window=None, max_zoom=1.0: seen.append(window)
                      or real_align(image, detector, window, max_zoom))
  model_dir = write_run_dir(tmp_path / "run", crop_box=(0.09, 0.0, 0.82, 1.0))
  photo = str(tmp_path / "photo.jpg")
  cv2.imwrite(photo, np.random.default_rng(0).integers(0, 256, (400, 360, 3), np.uint8))
  (result,) = predict(PredictConfig(model_dir, (photo,), detect_faces=True))
  # rows 9%-91% of the 218-row frame, rounded as the input pipeline's crop_window rounds them
  assert seen == [(20, 0, 179, 178)] and result["face"]["coverage"] == 1.0


@pytest.mark.parametrize("detect_faces, framings", [
    (None, ["as_is", "aligned"]), (False, ["as_is", "as_is"]), (True, ["aligned", "aligned"])])
def test_faces_are_aligned_unless_already_in_the_training_frame(
    celeba_dir, celeba_shards, tmp_path, monkeypatch, detect_faces, framings):
  built = []
  monkeypatch.setattr(faces, "make_detector",
                      lambda kind="auto": built.append(kind) or _TemplateDetector(0.5))
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards)
  stored = _partition(celeba_dir, "1")[0][0]  # the training images' size: aligned already
  photo = str(tmp_path / "photo.jpg")
  cv2.imwrite(photo, np.random.default_rng(0).integers(0, 256, (400, 360, 3), np.uint8))
  results = predict(PredictConfig(model_dir, (stored, photo), detect_faces=detect_faces))
  assert [r["framing"] for r in results] == framings
  assert bool(built) == ("aligned" in framings)  # the detector is built only when needed
  assert [r["status"] for r in results] == ["ok", "ok"]
  if results[1]["framing"] == "aligned":  # the stub's face fits inside the 400x360 photo
    assert results[1]["warnings"] == ["low face score 0.50 (< 0.9)"]
    assert results[1]["face"]["coverage"] == 1.0
  csv_path = str(tmp_path / "p.csv")
  predict(PredictConfig(model_dir, (photo,), output=csv_path, detect_faces=True))
  with open(csv_path) as f:
    (row,) = list(csv.DictReader(f))
  assert (row["framing"], row["warnings"]) == ("aligned", "low face score 0.50 (< 0.9)")


class _NoFaceDetector:
  name = "stub"

  def detect(self, image):
    del image
    return []


def test_a_photo_without_a_face_is_skipped_or_predicted_as_it_is(tmp_path, monkeypatch, caplog):
  """Skipped by default (no label); with no_face="as_is" it gets exactly the prediction the
  photo gets unaligned, a warning, and the summary counts it; a photo with a face is aligned
  either way."""
  model_dir = write_run_dir(tmp_path / "run", crop_box=(0.09, 0.0, 0.82, 1.0))
  rng = np.random.default_rng(0)
  photos = []
  for name in ("a.jpg", "b.jpg"):
    photos.append(str(tmp_path / name))
    cv2.imwrite(photos[-1], rng.integers(0, 256, (300, 260, 3), np.uint8))
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _NoFaceDetector())
  skipped = predict(PredictConfig(model_dir, tuple(photos)))
  assert [r["status"] for r in skipped] == ["no_face", "no_face"]
  unaligned = predict(PredictConfig(model_dir, tuple(photos), detect_faces=False))
  csv_path = str(tmp_path / "p.csv")
  with caplog.at_level("INFO"):
    fallback = predict(PredictConfig(model_dir, tuple(photos), no_face="as_is", output=csv_path))
  for got, want in zip(fallback, unaligned):
    assert (got["status"], got["framing"], got["label"]) == ("ok", "as_is", want["label"])
    assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-6)
    assert got["warnings"] == ["no face found (stub): predicted from the photo as it is"]
  assert "a photo without a detected face is predicted as it is" in caplog.text
  assert "2 used as they were (2 of them without a detected face), 0 aligned" in caplog.text
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [(r["status"], r["framing"]) for r in rows] == [("ok", "as_is")] * 2
  assert all(r["warnings"].startswith("no face found") for r in rows)
  # a face found: aligned as always, no_face changes nothing
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.99))
  (found,) = predict(PredictConfig(model_dir, tuple(photos[:1]), no_face="as_is"))
  assert found["framing"] == "aligned" and not any("no face" in w for w in found["warnings"])
  with pytest.raises(ValueError, match="no_face must be one of skip, as_is"):
    PredictConfig(model_dir, tuple(photos), no_face="guess").validate()


@pytest.mark.parametrize("augment, max_fit_zoom, zoom", [
    (AugmentConfig(), None, 1.0),  # trained without zoom-ins: the edge pixels repeat
    (AugmentConfig(zoom_range=(0.6, 1.7)), None, 1.475),  # enlarged until the crop fits
    (AugmentConfig(zoom_range=(0.8, 1.7)), None, 1.25),  # only as far as training zoomed
    (AugmentConfig(zoom_range=(0.6, 1.7)), 1.0, 1.0),  # --max_fit_zoom=1
])
def test_a_tight_photo_is_enlarged_as_far_as_the_run_trained(
    tmp_path, monkeypatch, caplog, augment, max_fit_zoom, zoom):
  """The stub's face (CelebA's template at 1.5x, from (40, 30)) in a 285x265 photo: the crop
  box's window (rows 20-198 of the frame) reaches past its right and bottom edges, and
  needs 1.475x (bottom: 134.25 px of half-height for 91 px of room) to fit."""
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.99))
  model_dir = write_run_dir(tmp_path / "run", crop_box=(0.09, 0.0, 0.82, 1.0), augment=augment)
  photo = str(tmp_path / "tight.jpg")
  cv2.imwrite(photo, np.random.default_rng(0).integers(0, 256, (285, 265, 3), np.uint8))
  csv_path = str(tmp_path / "p.csv")
  with caplog.at_level("INFO"):
    (result,) = predict(PredictConfig(model_dir, (photo,), detect_faces=True, output=csv_path,
                                      max_fit_zoom=max_fit_zoom))
  assert result["status"] == "ok" and result["face"]["zoom"] == pytest.approx(zoom, abs=2e-3)
  edge = [w for w in result["warnings"] if w.startswith("face at the photo's edge")]
  if zoom == 1.0:
    assert result["face"]["coverage"] < faces.MIN_FRAME_COVERAGE and edge
  else:
    assert result["face"]["coverage"] > faces.MIN_FRAME_COVERAGE and not edge
  assert (result["face"]["coverage"] == 1.0) == (zoom > 1.4)
  with open(csv_path) as f:
    (row,) = list(csv.DictReader(f))
  assert float(row["zoom"]) == result["face"]["zoom"]
  source = ("max_fit_zoom" if max_fit_zoom else "the run's training zoom"
            if augment.max_zoom_in > 1.0 else "the run trained with no zoom-in")
  assert f"past the photo's edge {'is fitted' if zoom > 1.0 else 'repeats'}" in caplog.text
  assert f"({source})" in caplog.text
  assert (f"({int(bool(result['warnings']))} with warnings, {int(zoom > 1.0)} enlarged to fit "
          "the photo)") in caplog.text


def test_an_exported_model_fits_tight_photos_as_its_run_does(tmp_path, monkeypatch):
  """The artifact's metadata carries the run's training zoom; one exported before it did
  aligns as predict did then (edge pixels repeated)."""
  monkeypatch.setattr(faces, "make_detector", lambda kind="auto": _TemplateDetector(0.99))
  model_dir = write_run_dir(tmp_path / "run", crop_box=(0.09, 0.0, 0.82, 1.0),
                            augment=AugmentConfig(zoom_range=(0.6, 1.7)))
  photo = str(tmp_path / "tight.jpg")
  cv2.imwrite(photo, np.random.default_rng(0).integers(0, 256, (285, 265, 3), np.uint8))
  artifact = export(model_dir, "tflite", str(tmp_path / "m.tflite"), check_images=(photo,))
  (result,) = predict(PredictConfig(None, (photo,), model=artifact, detect_faces=True))
  assert result["face"]["zoom"] == pytest.approx(1.475, abs=2e-3)
  with open(labels_path(artifact)) as f:
    info = json.load(f)
  assert info["max_zoom_in"] == pytest.approx(1 / 0.6)
  del info["max_zoom_in"]
  with open(labels_path(artifact), "w") as f:
    json.dump(info, f)
  (old,) = predict(PredictConfig(None, (photo,), model=artifact, detect_faces=True))
  assert old["face"]["zoom"] == 1.0
