"""One trainer per run directory: an advisory lock on model_dir/run.lock.

Two trainers on one model_dir would interleave checkpoints and overwrite each other's
best weights. The lock is an OS file lock (flock), so the kernel releases it when its
holder dies, kill -9 included: a later trainer takes a stale lock over at once, and says
whose it was. The file itself stays, holding the last holder's pid, host and start time
for the error message; it is never deleted, so two trainers can never lock two different
files of the same name.

flock is honoured between processes of one machine. On a shared network filesystem it
may not be: there, run one trainer per directory by other means.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
  """Another live trainer holds the run directory; the message says which process."""


class RunLock:
  """Holds model_dir's lock from `acquire()` until `release()` or the process ends."""

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, LOCK_NAME)
    self._file = None

  def acquire(self) -> "RunLock":
    """Takes the lock, or raises RunLockedError naming the live holder."""
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    handle = open(self.path, "a+")
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(handle)
      handle.close()
      raise RunLockedError(
          f"{os.path.dirname(self.path)} is in use by another trainer ({_describe(holder)}); "
          "wait for it to finish, stop it, or use another --model_dir") from None
    previous = _read_holder(handle)
    if previous.get("pid") and not previous.get("released"):
      logging.warning("%s: taking over the lock of a trainer that ended without releasing it "
                      "(%s)", self.path, _describe(previous))
    _write_holder(handle, {"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is None:
      return
    holder = _read_holder(self._file)
    _write_holder(self._file, {**holder, "released": True})
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    self._file = None


def _read_holder(handle) -> dict:
  handle.seek(0)
  try:
    return json.loads(handle.read() or "{}")
  except json.JSONDecodeError:
    return {}


def _write_holder(handle, holder: dict) -> None:
  handle.seek(0)
  handle.truncate()
  handle.write(json.dumps(holder))
  handle.flush()


def _describe(holder: dict) -> str:
  if not holder.get("pid"):
    return "holder unknown"
  return f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
