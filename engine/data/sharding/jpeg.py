"""A cheap structural JPEG check: markers, frame header and end-of-image.

Fully decoding every image would cap sharding near the decode rate; walking the
marker segments catches what actually happens to files (truncated downloads, HTML
or PNG saved as .jpg, empty files) at a fraction of the cost.
"""

from __future__ import annotations

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))


def jpeg_problem(data: bytes) -> str | None:
  """Returns why `data` is not a complete JPEG, or None when it looks whole."""
  if len(data) < 4 or data[:2] != b"\xff\xd8":
    return "not a JPEG (no start-of-image marker)"
  if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
    return "truncated JPEG (no end-of-image marker)"
  pos, size_seen = 2, False
  while pos + 4 <= len(data):
    if data[pos] != 0xFF:
      return f"corrupt JPEG (bad marker at byte {pos})"
    marker = data[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    if marker in _STANDALONE:
      pos += 2
      continue
    length = int.from_bytes(data[pos + 2:pos + 4], "big")
    if length < 2 or pos + 2 + length > len(data):
      return f"corrupt JPEG (segment runs past the end at byte {pos})"
    if marker in _SOF_MARKERS:
      height = int.from_bytes(data[pos + 5:pos + 7], "big")
      width = int.from_bytes(data[pos + 7:pos + 9], "big")
      if height == 0 or width == 0:
        return "corrupt JPEG (zero-sized frame)"
      size_seen = True
    if marker == 0xDA:  # start of scan: entropy-coded data follows
      return None if size_seen else "corrupt JPEG (scan before frame header)"
    pos += 2 + length
  return "truncated JPEG (no image data)"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
  """(height, width) from the frame header of a JPEG that passed `jpeg_problem`."""
  pos = 2
  while pos + 9 <= len(data):
    marker = data[pos + 1]
    if marker == 0xFF:
      pos += 1
      continue
    if marker in _STANDALONE:
      pos += 2
      continue
    if marker in _SOF_MARKERS:
      return (int.from_bytes(data[pos + 5:pos + 7], "big"),
              int.from_bytes(data[pos + 7:pos + 9], "big"))
    pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
  return None
