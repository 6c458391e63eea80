"""Face detection and alignment to CelebA's aligned-crop framing.

Models trained on CelebA's `img_align_celeba` have only seen 178x218 crops in which a
similarity transform put the eyes, nose and mouth at nearly fixed places. A photo must
be framed the same way before such a model sees it: detect the face, find its
landmarks, and warp it onto CelebA's mean landmark positions.

Detectors, best first:
- `mtcnn` (the `faces` extra; its weights ship inside the package, so it runs offline):
  a box and five landmarks per face; all five are fitted.
- OpenCV's bundled Haar cascade (OpenCV 4.x; OpenCV 5 moved cascades out of the main
  package): a box only. The eyes and mouth are placed at fixed fractions of the box,
  so the framing is rougher; `make_detector` logs which detector runs.

No face is a result (`status="no_face"`), not an exception: a batch of photos goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Protocol

import cv2
import numpy as np

# CelebA's aligned crops: (height, width).
CELEBA_CROP_SIZE = (218, 178)
# Mean landmark positions (x, y) of list_landmarks_align_celeba.txt in the 178x218 crop,
# in CelebA's column order; "left" is the eye on the image's left.
CELEBA_LANDMARKS = {
    "left_eye": (69.0, 111.0),
    "right_eye": (108.0, 111.0),
    "nose": (88.0, 135.0),
    "mouth_left": (72.0, 152.0),
    "mouth_right": (106.0, 152.0),
    "mouth_center": (89.0, 152.0),  # the corners' midpoint, for detectors without corners
}
# A landmark further than this from its template place (in crop pixels; the eyes are 39
# apart) after the fit is an outlier the fit ignores, e.g. a mouth corner on a profile.
_OUTLIER_PX = 10.0
# Haar boxes -> landmark guesses, as fractions of the box, read off MTCNN's landmarks on
# one frontal portrait: rough, as a box-based crop is.
_HAAR_LANDMARKS = {"left_eye": (0.285, 0.37), "right_eye": (0.715, 0.37),
                   "mouth_center": (0.5, 0.78)}
DETECTORS = ("auto", "mtcnn", "haar")

# Where training saw the face: MTCNN's median box (x, y, width, height) on 298 aligned
# celeba-dev crops; its 1st-percentile IoU with a crop's own box is 0.47, its 1st-percentile
# score 0.937. A face whose box lands elsewhere in the aligned frame, or that the detector
# doubts more than that, is outside what the model was trained on: predict warns.
CELEBA_FACE_BOX = (48.0, 67.0, 83.0, 113.0)
MIN_FRAME_IOU = 0.5
MIN_FACE_SCORE = 0.9
# Below this share of the model's input taken from the photo (the rest is its edge pixels
# repeated: a face at the border of the photo), the crop is not what training saw. The share
# is of the run's crop box inside the aligned frame, not of the whole frame: a photo cut to
# the training window covers all the model reads and none of the frame's unread margins.
MIN_FRAME_COVERAGE = 0.8


@dataclasses.dataclass(frozen=True)
class Detection:
  """One face in a source image.

  Attributes:
    box: (x, y, width, height) in source pixels.
    landmarks: name -> (x, y) in source pixels, names as in CELEBA_LANDMARKS.
    score: the detector's confidence (1.0 when it gives none).
  """

  box: tuple[float, float, float, float]
  landmarks: dict[str, tuple[float, float]]
  score: float = 1.0


@dataclasses.dataclass(frozen=True)
class AlignedFace:
  """The outcome for one image.

  Attributes:
    status: "ok" or "no_face".
    image: the aligned RGB uint8 crop [218, 178, 3] (None without a face).
    detection: the face that was aligned: the largest one found.
    num_faces: how many faces the detector found.
    detector: which detector ran ("mtcnn" or "haar").
    box_in_frame: the detection's box carried into the aligned crop (x, y, width, height:
      the bounds of its warped corners), to compare with CELEBA_FACE_BOX.
    coverage: the share of the model's input window (the run's crop box in the aligned frame,
      the whole frame without one) that comes from the photo.
    zoom: how much the aligned face was enlarged about the window's centre so that the
      window stays inside the photo (1.0: not at all; see `fit_zoom`).
  """

  status: str
  image: np.ndarray | None
  detection: Detection | None
  num_faces: int
  detector: str
  box_in_frame: tuple[float, float, float, float] | None = None
  coverage: float | None = None
  zoom: float = 1.0


class FaceDetector(Protocol):
  name: str

  def detect(self, image: np.ndarray) -> list[Detection]:
    """Faces in an RGB uint8 image [H, W, 3]."""


class MtcnnDetector:
  """MTCNN (Zhang et al. 2016) from the `mtcnn` package: boxes and five landmarks."""

  name = "mtcnn"

  def __init__(self, min_face_size: int = 20):
    from mtcnn import MTCNN  # optional dependency: the `faces` extra

    self._mtcnn = MTCNN()
    self._min_face_size = min_face_size

  def detect(self, image: np.ndarray) -> list[Detection]:
    if min(image.shape[:2]) < 12:  # below PNet's 12 px window nothing can be found
      return []
    faces = self._mtcnn.detect_faces(image, min_face_size=self._min_face_size)
    return [Detection(box=tuple(float(v) for v in face["box"]),
                      landmarks={name: (float(x), float(y))
                                 for name, (x, y) in face["keypoints"].items()},
                      score=float(face["confidence"]))
            for face in faces]


class HaarDetector:
  """OpenCV's frontal-face Haar cascade: boxes only; landmarks guessed from the box."""

  name = "haar"

  def __init__(self, min_face_size: int = 24):
    path = haar_cascade_path()
    if path is None:
      raise ImportError(f"OpenCV {cv2.__version__} has no bundled Haar cascades (OpenCV 5 "
                        "moved them out); install mtcnn (pip install 'facetrain[faces]')")
    self._cascade = cv2.CascadeClassifier(path)
    self._min_face_size = min_face_size

  def detect(self, image: np.ndarray) -> list[Detection]:
    if min(image.shape[:2]) < self._min_face_size:
      return []
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    boxes = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                           minSize=(self._min_face_size,) * 2)
    return [Detection(box=(float(x), float(y), float(w), float(h)),
                      landmarks={k: (float(x + fx * w), float(y + fy * h))
                                 for k, (fx, fy) in _HAAR_LANDMARKS.items()})
            for x, y, w, h in boxes]


def haar_cascade_path() -> str | None:
  """OpenCV's bundled frontal-face cascade, or None where this OpenCV has none."""
  if not hasattr(cv2, "CascadeClassifier"):
    return None
  folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
  path = os.path.join(folder or "", "haarcascade_frontalface_default.xml")
  return path if folder and os.path.exists(path) else None


def mtcnn_available() -> bool:
  try:
    import mtcnn  # noqa: F401
  except ImportError:
    return False
  return True


def make_detector(kind: str = "auto") -> FaceDetector:
  """Builds a detector: "mtcnn", "haar", or "auto" (mtcnn if installed, else haar).

  Raises:
    ImportError: the requested detector (for "auto": either) is not available.
  """
  if kind not in DETECTORS:
    raise ValueError(f"unknown face detector {kind!r}; known: {', '.join(DETECTORS)}")
  if kind == "mtcnn" or kind == "auto" and mtcnn_available():
    detector = MtcnnDetector()
  elif kind == "haar" or haar_cascade_path():
    if kind == "auto":
      logging.warning("face detection: mtcnn is not installed; falling back to OpenCV's Haar "
                      "cascade, which finds no landmarks, so alignment is coarser "
                      "(pip install 'facetrain[faces]' for MTCNN)")
    detector = HaarDetector()
  else:
    raise ImportError("no face detector: install mtcnn (pip install 'facetrain[faces]'); "
                      f"OpenCV {cv2.__version__} ships no Haar cascades to fall back on")
  logging.info("face detection: %s", detector.name)
  return detector


def similarity_to_celeba(landmarks: dict[str, tuple[float, float]]) -> np.ndarray | None:
  """The 2x3 similarity (rotation, uniform scale, shift) taking `landmarks` onto
  CelebA's template, fitted to all shared points; None if they are degenerate."""
  names = [n for n in CELEBA_LANDMARKS if n in landmarks]
  if len(names) < 2:
    return None
  source = np.array([landmarks[n] for n in names], np.float32)
  target = np.array([CELEBA_LANDMARKS[n] for n in names], np.float32)
  matrix, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                          ransacReprojThreshold=_OUTLIER_PX)
  if matrix is None or not np.all(np.isfinite(matrix)):
    return None
  return matrix


def warp_to_celeba(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Warps an RGB image by a similarity `matrix` into a 178x218 CelebA-framed crop."""
  scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
  if scale < 0.5:
    # Bilinear warping samples 4 pixels per output pixel; shrinking more than 2x first
    # by area averaging avoids aliasing on high-resolution photos.
    factor = 2.0 * scale
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    fx, fy = size[0] / image.shape[1], size[1] / image.shape[0]
    # resize maps pixel centres: shrunk = f * (x + 0.5) - 0.5; undo that before `matrix`.
    matrix = matrix @ np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5],
                                [0, 0, 1]])
    image = shrunk
  height, width = CELEBA_CROP_SIZE
  return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)


def _area(detection: Detection) -> float:
  return detection.box[2] * detection.box[3]


def _box_in_frame(box: tuple[float, ...], matrix: np.ndarray) -> tuple[float, ...]:
  x, y, w, h = box
  corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]]) @ matrix.T
  (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
  return tuple(round(float(v), 1) for v in (x0, y0, x1 - x0, y1 - y0))


def _coverage(image_shape: tuple[int, ...], matrix: np.ndarray,
              window: tuple[int, int, int, int] | None = None) -> float:
  """The share of `window` (top, left, height, width pixels of the 178x218 frame; None: all
  of it) that `matrix` takes from inside the photo."""
  top, left, height, width = window or (0, 0, *CELEBA_CROP_SIZE)
  inverse = cv2.invertAffineTransform(matrix)
  ys, xs = np.mgrid[top:top + height, left:left + width]
  source = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1) @ inverse.T
  inside = ((source[:, 0] >= -0.5) & (source[:, 0] <= image_shape[1] - 0.5)
            & (source[:, 1] >= -0.5) & (source[:, 1] <= image_shape[0] - 0.5))
  return round(float(inside.mean()), 3)


def _window_and_centre(window: tuple[int, int, int, int] | None
                       ) -> tuple[tuple[int, int, int, int], np.ndarray]:
  """`window` (None: the whole 178x218 frame) and its centre (x, y) in frame pixels."""
  top, left, height, width = window = window or (0, 0, *CELEBA_CROP_SIZE)
  return window, np.array([left + (width - 1) / 2, top + (height - 1) / 2])


def fit_zoom(image_shape: tuple[int, ...], matrix: np.ndarray,
             window: tuple[int, int, int, int] | None, max_zoom: float) -> float:
  """The least zoom-in (>= 1, at most `max_zoom`) about the window's centre that keeps the
  window (top, left, height, width pixels of the aligned frame; None: all of it) inside the
  photo, for an alignment `matrix` (photo -> frame).

  A tight face chip aligned to CelebA's frame leaves the window's edges outside the photo,
  and the warp repeats the photo's edge pixels there: hair and forehead smeared into bands
  no training image had. A model trained with zoom-in augmentation has seen the face larger
  instead, with real pixels to the window's edges; up to that zoom (`max_zoom`), enlarging
  the face is closer to training than the bands. 1.0 when the window is inside already,
  `max_zoom` when even that does not fit (or the window's centre is off the photo).
  """
  if max_zoom <= 1.0:
    return 1.0
  (top, left, height, width), centre = _window_and_centre(window)
  inverse = cv2.invertAffineTransform(matrix)
  centre_in_photo = inverse[:, :2] @ centre + inverse[:, 2]
  low = np.array([-0.5, -0.5])  # pixel edges, as _coverage counts them
  high = np.array([image_shape[1] - 0.5, image_shape[0] - 0.5])
  room_low, room_high = centre_in_photo - low, high - centre_in_photo
  if np.any(room_low <= 0) or np.any(room_high <= 0):
    return max_zoom
  needed = 1.0
  for dx in (left - 0.5, left + width - 0.5):  # the window's outer pixel edges
    for dy in (top - 0.5, top + height - 0.5):
      offset = inverse[:, :2] @ (np.array([dx, dy]) - centre)  # corner - centre, in the photo
      needed = max(needed, *np.where(offset > 0, offset / room_high, -offset / room_low))
  return float(min(needed * (1 + 1e-6), max_zoom))


def zoom_about(matrix: np.ndarray, zoom: float,
               window: tuple[int, int, int, int] | None) -> np.ndarray:
  """`matrix` (photo -> frame) followed by a `zoom`-fold enlargement about the centre of
  `window` (None: the whole frame)."""
  _, centre = _window_and_centre(window)
  zoomed = zoom * matrix
  zoomed[:, 2] += (1 - zoom) * centre
  return zoomed


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
  """Intersection over union of two (x, y, width, height) boxes."""
  width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  intersection = width * height
  union = a[2] * a[3] + b[2] * b[3] - intersection
  return intersection / union if union > 0 else 0.0


def _cut(value: float) -> float:
  """`value` cut (not rounded) to 2 decimals, for warnings about values under a threshold: a
  score of 0.8996 under 0.9 reads 0.89, not 0.90."""
  return float(np.floor(value * 100 + 1e-9) / 100)


def framing_warnings(face: AlignedFace) -> list[str]:
  """Why an aligned face may be outside what a CelebA-trained model saw (empty: none)."""
  warnings = []
  if face.num_faces > 1:
    warnings.append(f"{face.num_faces} faces; the largest was used")
  if face.detection.score < MIN_FACE_SCORE:
    warnings.append(f"low face score {_cut(face.detection.score):.2f} (< {MIN_FACE_SCORE})")
  iou = box_iou(face.box_in_frame, CELEBA_FACE_BOX)
  if iou < MIN_FRAME_IOU:
    warnings.append(f"face box far from the training framing (IoU {_cut(iou):.2f} < {MIN_FRAME_IOU})")
  if face.coverage < MIN_FRAME_COVERAGE:
    warnings.append(f"face at the photo's edge: {100 * _cut(face.coverage):.0f}% of the crop "
                    "is in the photo")
  return warnings


def align_face(image: np.ndarray, detector: FaceDetector,
               window: tuple[int, int, int, int] | None = None,
               max_zoom: float = 1.0) -> AlignedFace:
  """Detects faces in an RGB uint8 image and aligns the largest one to CelebA's framing;
  `window` (top, left, height, width pixels of that frame) is the part the model reads, its
  crop box as `engine.data.decode.crop_window` cuts it (for `coverage`). Where the window
  falls off the photo, the face is enlarged up to `max_zoom` to keep it inside (`fit_zoom`);
  `box_in_frame` is the alignment's own, before that zoom."""
  detections = sorted(detector.detect(image), key=_area, reverse=True)
  for detection in detections:
    matrix = similarity_to_celeba(detection.landmarks)
    if matrix is not None:
      zoom = fit_zoom(image.shape, matrix, window, max_zoom)
      zoomed = zoom_about(matrix, zoom, window) if zoom > 1.0 else matrix
      return AlignedFace("ok", warp_to_celeba(image, zoomed), detection, len(detections),
                         detector.name, _box_in_frame(detection.box, matrix),
                         _coverage(image.shape, zoomed, window), round(zoom, 3))
  return AlignedFace("no_face", None, None, len(detections), detector.name)
