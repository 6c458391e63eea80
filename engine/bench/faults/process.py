"""Real processes for the fault campaign: bounded runs, stderr watching, signals, cleanup.

Every process runs in its own session (process group), so a timeout or a failing check
can end it and everything it started, and nothing outlives the scenario that made it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence

import engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
PYTHON = sys.executable

# TensorFlow's C++ start-up banner goes to stderr whatever TF_CPP_MIN_LOG_LEVEL says
# ("WARNING: All log messages before absl::InitializeLog() ...", I0000/E0000 lines from
# port.cc, cudart_stub.cc, cuda_platform.cc, and cpu_feature_guard's "To enable the
# following instructions ..."). It is not the program talking to the user, so "one line
# on stderr" is counted without it.
_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                       r"|[IWE]0000 \d\d:\d\d:\d+\.\d+\s+\d+ "
                       r"(port|cudart_stub|cuda_platform|cpu_feature_guard)\.cc:\d+\]"
                       r"|To enable the following instructions: .* rebuild TensorFlow)")
# An absl log line: "I1130 14:13:37.000055 139704 loop.py:425] message".
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")
_PROGRESS = re.compile(r"\] step (\d+)/(\d+) ")


def progress_step(line: str) -> int | None:
  """The step K of a trainer's progress line ("step K/TOTAL ..."), else None."""
  match = _PROGRESS.search(line)
  return int(match[1]) if match else None


@dataclasses.dataclass(frozen=True)
class ProcessResult:
  """How one process ended.

  Attributes:
    command: the argv it ran.
    returncode: its exit code (negative: killed by that signal); None if it timed out.
    stdout: everything it wrote to stdout.
    stderr: everything it wrote to stderr.
    seconds: wall time from start to exit.
  """

  command: tuple[str, ...]
  returncode: int | None
  stdout: str
  stderr: str
  seconds: float

  @property
  def timed_out(self) -> bool:
    return self.returncode is None

  @property
  def user_lines(self) -> list[str]:
    """stderr without TensorFlow's start-up banner and blank lines."""
    return [line for line in self.stderr.splitlines()
            if line.strip() and not _TF_NOISE.match(line)]

  @property
  def has_traceback(self) -> bool:
    return "Traceback (most recent call last)" in self.stderr

  def error_line(self) -> str:
    """The line that tells the user what went wrong: `prog: error: ...` if printed,
    else the last error-level log line, else the last line of stderr."""
    lines = self.user_lines
    for line in reversed(lines):
      if ": error: " in line:
        return line
    for line in reversed(lines):
      if line.startswith(("E", "F")) and _ABSL_LINE.match(line):
        return line
    return lines[-1] if lines else ""

  def log_lines(self, pattern: str) -> list[str]:
    """stderr lines matching the regular expression `pattern`."""
    return [line for line in self.stderr.splitlines() if re.search(pattern, line)]

  def describe(self, tail_lines: int = 6) -> str:
    """Command, exit code and the end of stderr, for a row's detail."""
    code = "timed out" if self.timed_out else f"exit {self.returncode}"
    tail = "\n    ".join(self.user_lines[-tail_lines:])
    return f"$ {' '.join(self.command)}\n  -> {code} after {self.seconds:.1f} s\n    {tail}"


def environment() -> dict:
  """The environment every campaign process gets: this one's, without a cluster and with
  TensorFlow's default logging (what a user sees; the tests' conftest quiets it)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  for name in ("TF_CONFIG", "TF_CPP_MIN_LOG_LEVEL"):
    env.pop(name, None)
  return env


class Watched:
  """A running process whose stdout and stderr are read line by line as they come.

  Use as a context manager: on exit the process group is killed if still alive.

  Args:
    command: the argv.
    timeout_s: the longest any wait on this process may take in total.
  """

  def __init__(self, command: Sequence[str], timeout_s: float):
    self.command = tuple(command)
    self.deadline = time.monotonic() + timeout_s
    self._started = time.monotonic()
    self._stdout: list[str] = []
    self._stderr: list[str] = []
    self._lines: queue.Queue[str | None] = queue.Queue()
    self.process = subprocess.Popen(self.command, cwd=REPO, env=environment(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace", start_new_session=True)
    self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self._stdout,
                                                               False), daemon=True),
                     threading.Thread(target=self._read, args=(self.process.stderr, self._stderr,
                                                               True), daemon=True)]
    for reader in self._readers:
      reader.start()

  @property
  def pid(self) -> int:
    return self.process.pid

  def _read(self, stream, sink: list[str], forward: bool) -> None:
    for line in stream:
      sink.append(line)
      if forward:
        self._lines.put(line)
    if forward:
      self._lines.put(None)

  def wait_for_line(self, predicate: Callable[[str], bool]) -> str | None:
    """Reads stderr until a line satisfies `predicate`; None at its end or the deadline."""
    while True:
      remaining = self.deadline - time.monotonic()
      if remaining <= 0:
        return None
      try:
        line = self._lines.get(timeout=min(remaining, 1.0))
      except queue.Empty:
        continue
      if line is None:
        self._lines.put(None)  # later waits see the end too
        return None
      if predicate(line):
        return line

  def send(self, signum: int) -> None:
    """Sends `signum` to the process itself (not its group), if it is still running."""
    if self.process.poll() is None:
      os.kill(self.process.pid, signum)

  def wait(self) -> ProcessResult:
    """Waits for the exit (killing the group at the deadline) and returns the result."""
    try:
      self.process.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
      code = self.process.returncode
    except subprocess.TimeoutExpired:
      self.kill_group()
      code = None
    for reader in self._readers:
      reader.join(timeout=10)
    return ProcessResult(self.command, code, "".join(self._stdout), "".join(self._stderr),
                         time.monotonic() - self._started)

  def kill_group(self) -> None:
    if self.process.poll() is None:
      try:
        os.killpg(self.process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.process.wait()

  def __enter__(self) -> "Watched":
    return self

  def __exit__(self, *exc) -> None:
    self.kill_group()


def run(command: Sequence[str], timeout_s: float) -> ProcessResult:
  """Runs `command` from the repository root to its end (or the timeout) and returns how."""
  with Watched(command, timeout_s) as process:
    return process.wait()


def module_command(module: str, *args: str) -> list[str]:
  """`python -m module args...` with this interpreter."""
  return [PYTHON, "-m", module, *args]
