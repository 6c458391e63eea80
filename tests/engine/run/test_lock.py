"""One trainer per run directory: a live holder refuses a second, a dead one is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from engine.run.lock import RunLock, RunLockedError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  first = RunLock(str(tmp_path)).acquire()
  with pytest.raises(RunLockedError, match=f"in use by another trainer \\(pid {os.getpid()} on "):
    RunLock(str(tmp_path)).acquire()
  first.release()
  RunLock(str(tmp_path)).acquire().release()  # free again once released


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from engine.run.lock import RunLock; "
       f"lock = RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
      RunLock(str(tmp_path)).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  finally:
    holder.kill()
  start = time.perf_counter()
  with caplog.at_level("WARNING"):
    lock = RunLock(str(tmp_path)).acquire()
  assert time.perf_counter() - start < 1.0  # at once: the kernel dropped the dead holder's lock
  assert f"taking over the lock of a trainer that ended without releasing it (pid {holder.pid}" \
      in caplog.text
  lock.release()
