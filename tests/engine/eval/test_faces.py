"""engine.eval.faces: alignment geometry, the no-face result, and the detectors."""

import math

import numpy as np
import pytest

from engine.eval import faces
from engine.eval.faces import CELEBA_CROP_SIZE, CELEBA_LANDMARKS, Detection

_FIVE = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class _StubDetector:
  """Returns fixed detections: alignment tested apart from any detector."""

  name = "stub"

  def __init__(self, detections):
    self._detections = detections

  def detect(self, image):
    del image
    return self._detections


def _moved_template(angle_deg, scale, shift):
  """CelebA's landmarks carried by a similarity into a larger photo."""
  a = math.radians(angle_deg)
  rotation = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  return {n: tuple(rotation @ np.array(CELEBA_LANDMARKS[n]) + shift) for n in _FIVE}


def _dot_image(landmarks, size=(600, 700)):
  """A grey photo with a bright 5x5 dot at each landmark."""
  image = np.full((*size, 3), 90, np.uint8)
  for x, y in landmarks.values():
    image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
  return image


def test_alignment_puts_landmarks_on_celeba_template():
  landmarks = _moved_template(angle_deg=25.0, scale=2.2, shift=(240.0, 80.0))
  face = faces.align_face(_dot_image(landmarks),
                          _StubDetector([Detection((0, 0, 1, 1), landmarks)]))
  assert face.status == "ok" and face.image.shape == (*CELEBA_CROP_SIZE, 3)
  assert face.image.dtype == np.uint8
  for name in _FIVE:  # each dot lands (blurred by the shrink) where CelebA has it
    x, y = (int(v) for v in CELEBA_LANDMARKS[name])
    assert face.image[y, x].mean() > 150, name
  assert face.image[10, 10].mean() == pytest.approx(90, abs=2)


def test_an_outlying_landmark_does_not_move_the_fit():
  landmarks = _moved_template(angle_deg=-10.0, scale=1.5, shift=(100.0, 50.0))
  exact = faces.similarity_to_celeba(landmarks)
  landmarks["mouth_right"] = (landmarks["mouth_right"][0] + 60, landmarks["mouth_right"][1])
  np.testing.assert_allclose(faces.similarity_to_celeba(landmarks), exact, atol=1e-3)


def test_no_face_is_a_result_and_the_largest_face_wins():
  image = np.zeros((80, 80, 3), np.uint8)
  none = faces.align_face(image, _StubDetector([]))
  assert (none.status, none.image, none.num_faces) == ("no_face", None, 0)
  small = Detection((0, 0, 10, 10), _moved_template(0.0, 0.2, (0.0, 0.0)))
  large = Detection((0, 0, 40, 40), _moved_template(0.0, 0.4, (0.0, 0.0)))
  face = faces.align_face(image, _StubDetector([small, large]))
  assert face.status == "ok" and face.detection is large and face.num_faces == 2


def _template_box(scale, shift):
  """CELEBA_FACE_BOX carried into a photo by the same similarity as _moved_template."""
  x, y, w, h = faces.CELEBA_FACE_BOX
  return (x * scale + shift[0], y * scale + shift[1], w * scale, h * scale)


def test_a_face_framed_like_training_has_no_warning():
  landmarks = _moved_template(0.0, 2.0, (150.0, 100.0))
  face = faces.align_face(_dot_image(landmarks), _StubDetector(
      [Detection(_template_box(2.0, (150.0, 100.0)), landmarks, score=0.99)]))
  np.testing.assert_allclose(face.box_in_frame, faces.CELEBA_FACE_BOX, atol=0.2)
  assert face.coverage == 1.0
  assert faces.framing_warnings(face) == []


def test_coverage_counts_only_the_window_the_model_reads():
  # A photo cut to rows 22-191 of the aligned frame: the window a run's crop box of rows
  # 10%-88% reads, with none of the frame's top and bottom margins.
  window = (22, 0, 170, 178)
  landmarks = _moved_template(0.0, 1.0, (0.0, -22.0))
  photo = _dot_image(landmarks, size=(170, 178))
  detection = Detection(_template_box(1.0, (0.0, -22.0)), landmarks, score=0.99)
  whole = faces.align_face(photo, _StubDetector([detection]))
  inside = faces.align_face(photo, _StubDetector([detection]), window)
  assert whole.coverage == pytest.approx(170 / 218, abs=0.005)
  assert any(w.startswith("face at the photo's edge") for w in faces.framing_warnings(whole))
  assert inside.coverage == 1.0 and faces.framing_warnings(inside) == []
  # Ten rows less at the bottom and the window is no longer all photo.
  short = faces.align_face(photo[:-10], _StubDetector([detection]), window)
  assert short.coverage == pytest.approx(160 / 170, abs=0.01)


def _tight_chip():
  """The aligned frame's columns 20-157 and rows 40-178 as a photo: the window (20, 0, 179,
  178) that a crop box of rows 9%-91% reads needs 89/69 (about 1.29) times enlargement about
  its centre (88.5, 109) to fit inside it (both axes leave 69 px of room, edge to edge)."""
  landmarks = _moved_template(0.0, 1.0, (-20.0, -40.0))
  photo = _dot_image(landmarks, size=(139, 138))
  gradient = np.linspace(20, 140, 139).astype(np.uint8)[:, None, None]  # rows differ
  photo = np.where(photo == 255, photo, np.broadcast_to(gradient, photo.shape))
  return photo, Detection(_template_box(1.0, (-20.0, -40.0)), landmarks, score=0.99)


def test_a_tight_chip_is_enlarged_until_the_window_fits_up_to_the_limit():
  window = (20, 0, 179, 178)
  photo, detection = _tight_chip()
  padded = faces.align_face(photo, _StubDetector([detection]), window)
  assert padded.zoom == 1.0 and padded.coverage < 0.65
  fitted = faces.align_face(photo, _StubDetector([detection]), window, max_zoom=2.0)
  assert fitted.zoom == pytest.approx(89 / 69, abs=1e-3)
  assert fitted.coverage == 1.0 and faces.framing_warnings(fitted) == []
  # the alignment itself is unchanged: the face box is where training saw faces
  assert fitted.box_in_frame == padded.box_in_frame
  np.testing.assert_allclose(fitted.box_in_frame, faces.CELEBA_FACE_BOX, atol=0.2)
  # each landmark moved away from the window's centre by the zoom
  for name in _FIVE:
    x, y = (c + fitted.zoom * (v - c) for v, c in zip(CELEBA_LANDMARKS[name], (88.5, 109)))
    assert fitted.image[int(round(y)), int(round(x))].mean() > 150, name
  # the bands: the photo's last row repeated below it without the zoom; with it, the window's
  # rows run through the photo's gradient from its first row to its last
  assert np.all(padded.image[185:199] == padded.image[184:185])
  rows = fitted.image[20:199, 5:15].astype(int).mean(axis=(1, 2))
  assert np.all(np.diff(rows) >= 0) and rows[0] <= 21 and rows[-1] >= 139
  capped = faces.align_face(photo, _StubDetector([detection]), window, max_zoom=1.1)
  assert capped.zoom == 1.1 and padded.coverage < capped.coverage < 1.0


def test_a_face_inside_the_photo_is_not_enlarged():
  landmarks = _moved_template(10.0, 2.0, (150.0, 100.0))
  face = faces.align_face(_dot_image(landmarks), _StubDetector([Detection(
      _template_box(2.0, (150.0, 100.0)), landmarks)]), (20, 0, 179, 178), max_zoom=1.7)
  assert face.zoom == 1.0 and face.coverage == 1.0


def test_a_window_centred_off_the_photo_gets_the_limit():
  # no zoom about the window's centre brings it inside: the most training allows
  matrix = np.array([[1.0, 0.0, -300.0], [0.0, 1.0, 0.0]])  # the photo lies left of it
  assert faces.fit_zoom((218, 178), matrix, None, 1.5) == 1.5
  assert faces.fit_zoom((218, 178), matrix, None, 1.0) == 1.0


def test_warnings_name_what_differs_from_training():
  shift = (-120.0, 100.0)  # the face's frame hangs off the photo's left edge
  landmarks = _moved_template(0.0, 2.0, shift)
  loose_box = (shift[0] + 20.0, shift[1] - 40.0, 340.0, 420.0)  # a box far from the face's
  other = Detection((500, 500, 10, 10), _moved_template(0.0, 0.1, (500.0, 500.0)))
  face = faces.align_face(_dot_image(landmarks), _StubDetector(
      [Detection(loose_box, landmarks, score=0.6), other]))
  assert face.coverage < faces.MIN_FRAME_COVERAGE
  warnings = faces.framing_warnings(face)
  assert warnings[0] == "2 faces; the largest was used"
  assert warnings[1] == "low face score 0.60 (< 0.9)"
  assert warnings[2].startswith("face box far from the training framing (IoU 0.")
  assert warnings[3].startswith("face at the photo's edge: ")


def test_warnings_cut_numbers_instead_of_rounding_them_up_to_the_threshold():
  """A score of 0.8996 is under 0.9: the warning says 0.89, never "0.90 (< 0.9)"."""
  landmarks = _moved_template(0.0, 2.0, (150.0, 100.0))
  face = faces.align_face(_dot_image(landmarks), _StubDetector(
      [Detection(_template_box(2.0, (150.0, 100.0)), landmarks, score=0.8996)]))
  assert faces.framing_warnings(face) == ["low face score 0.89 (< 0.9)"]


def test_box_iou():
  assert faces.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
  assert faces.box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
  assert faces.box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_real_detector_finds_no_face_in_noise():
  try:
    detector = faces.make_detector()
  except ImportError as e:
    pytest.skip(str(e))
  rng = np.random.default_rng(0)
  for image in (rng.integers(0, 256, (96, 80, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)):
    face = faces.align_face(image, detector)
    assert face.status == "no_face" and face.detector == detector.name


def test_without_any_detector_the_error_says_what_to_install(monkeypatch):
  monkeypatch.setattr(faces, "mtcnn_available", lambda: False)
  monkeypatch.setattr(faces, "haar_cascade_path", lambda: None)
  with pytest.raises(ImportError, match=r"facetrain\[faces\]"):
    faces.make_detector()
  with pytest.raises(ValueError, match="unknown face detector"):
    faces.make_detector("dlib")


def test_haar_fallback(monkeypatch, caplog):
  if faces.haar_cascade_path() is None:
    pytest.skip("this OpenCV ships no Haar cascades (OpenCV 5 moved them out)")
  monkeypatch.setattr(faces, "mtcnn_available", lambda: False)
  detector = faces.make_detector()
  assert detector.name == "haar" and "Haar" in caplog.text
  assert faces.align_face(np.full((64, 64, 3), 128, np.uint8), detector).status == "no_face"


def test_mtcnn_runs_offline_from_its_packaged_weights():
  pytest.importorskip("mtcnn")
  detector = faces.make_detector("mtcnn")
  assert detector.name == "mtcnn"
  assert detector.detect(np.full((120, 100, 3), 128, np.uint8)) == []


def test_mtcnn_aligns_a_real_photo():
  """Needs a real face: scikit-image ships one (NASA's public-domain astronaut portrait)."""
  pytest.importorskip("mtcnn")
  data = pytest.importorskip("skimage.data")
  face = faces.align_face(data.astronaut(), faces.make_detector("mtcnn"))
  assert face.status == "ok" and face.num_faces == 1
  matrix = faces.similarity_to_celeba(face.detection.landmarks)
  for name in ("left_eye", "right_eye"):
    x, y = face.detection.landmarks[name]
    np.testing.assert_allclose(matrix @ [x, y, 1.0], CELEBA_LANDMARKS[name], atol=4.0)
