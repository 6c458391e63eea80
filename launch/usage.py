"""How every entry point meets a user's mistake: one line on stderr and exit code 2.

absl's `app.run` answers a mistyped flag or a missing flagfile with two lines and exit 1,
an `app.UsageError` with the whole usage text and exit 1, and anything else with a
traceback. A mistake on the command line (an unknown flag, a flagfile that is not there,
a contradictory combination, a path that is not what the flag says) deserves one line
naming the flag or the file, like argparse's `prog: error: ...`:

  launch.train: error: unknown flag --epochz (did you mean --epochs?)

Each entry point says which exceptions of its engine call are such mistakes
(`user_errors`); their traceback is still logged at `--verbosity=1`. Programming errors
keep their traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

EXIT_USAGE = 2
EXIT_FAILED = 1


def program_name() -> str:
  """`launch.train` for `python -m launch.train`, else the script's file name."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return spec.name if spec and spec.name else os.path.basename(sys.argv[0])


def error_message(error: BaseException) -> str:
  """The one-line text of an exception (a KeyError's message without its quotes)."""
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  return " ".join(str(error).split()) or type(error).__name__


def fail(message: str | BaseException, exit_code: int = EXIT_USAGE) -> NoReturn:
  """Prints `program: error: message` as one line on stderr and exits."""
  text = error_message(message) if isinstance(message, BaseException) else message
  print(f"{program_name()}: error: {' '.join(text.split())}", file=sys.stderr, flush=True)
  sys.exit(exit_code)


def flag_error_message(error: flags.Error) -> str:
  """absl's flag-parsing errors, reworded to name the flag or the flagfile."""
  if isinstance(error, flags.UnrecognizedFlagError):
    # absl keeps its suggestions only in the text: "... Did you mean: epochs ?"
    match = re.search(r"Did you mean: (.+) \?$", str(error))
    hint = f" (did you mean --{' or --'.join(match[1].split(', '))}?)" if match else ""
    return f"unknown flag --{error.flagname}{hint}"
  text = str(error).removeprefix("ERROR:: ")
  if isinstance(error, flags.CantOpenFlagFileError):
    # absl: "Unable to open flagfile: [Errno 2] No such file or directory: 'x.flags'"
    match = re.search(r"\] (.+): '(.+)'$", text)
    if match:
      return f"--flagfile={match[2]}: {match[1].lower()}"
  return text


def parse_flags(argv: Sequence[str],
                expand_argv: Callable[[list[str]], list[str]] | None = None) -> list[str]:
  """absl's parse of `argv` (after `expand_argv`); a flag error ends the program."""
  argv = list(argv)
  try:
    return flags.FLAGS(expand_argv(argv) if expand_argv else argv)
  except flags.Error as e:
    fail(flag_error_message(e))


def run(main: Callable[[list[str]], int | None], *,
        user_errors: tuple[type[BaseException], ...] = (),
        expand_argv: Callable[[list[str]], list[str]] | None = None) -> None:
  """`app.run(main)`, with flag errors, `app.UsageError` and `user_errors` as one line.

  Args:
    main: the entry point's main(argv); its return value is the exit code.
    user_errors: exceptions out of `main` that mean the user asked for something that
      cannot be (a missing file, a run without checkpoints): printed as one line, exit 2.
    expand_argv: rewrites argv before absl parses it (e.g. finds flagfiles in configs/).
  """

  def guarded_main(argv: list[str]) -> int | None:
    try:
      return main(argv)
    except app.UsageError as e:
      fail(e)
    except user_errors as e:
      logging.debug("%s", e, exc_info=True)
      fail(e)

  app.run(guarded_main, flags_parser=lambda argv: parse_flags(argv, expand_argv))
