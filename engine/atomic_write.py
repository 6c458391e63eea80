"""Writing a file so that no reader ever sees half of it: a temporary name, then a rename."""

from __future__ import annotations

import json
import os


def atomic_write_json(path: str, payload: dict) -> None:
  """Writes `payload` as indented, key-sorted JSON to `path`, atomically (a killed process
  leaves the old file or the new one, never a mix)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
