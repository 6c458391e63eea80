"""Start a tf.data service server: the dispatcher, or a CPU input worker.

  python -m launch.data_service --role=dispatcher --port=5050 [--work_dir=DIR]
  python -m launch.data_service --role=worker --dispatcher=HOST:5050 [--port=5051]
      [--worker_host=THIS_HOST]

Then train with `python -m launch.train ... --tf_data_service=grpc://HOST:5050`: the
workers read, decode and batch the training files (the trainers augment on the device).
Each server runs until killed. A dispatcher with --work_dir journals its jobs there and,
restarted on the same port and work_dir, resumes them (fault-tolerant mode). A worker
whose dispatcher is unreachable stops with one line naming the address, exit code 2.
"""

from __future__ import annotations

from absl import app, flags, logging

from engine.config import DataServiceConfig
from launch import usage

_D = DataServiceConfig(role="dispatcher")
_ROLE = flags.DEFINE_enum("role", None, ["dispatcher", "worker"], "Which server to run.")
_PORT = flags.DEFINE_integer("port", _D.port, "Port to serve on (0: any free port; give the "
                             "dispatcher a fixed one).")
_WORK_DIR = flags.DEFINE_string("work_dir", _D.work_dir, "Dispatcher: journal directory "
                                "(fault-tolerant mode: a restart resumes the jobs).")
_WORKER_TIMEOUT_MS = flags.DEFINE_integer("worker_timeout_ms", _D.worker_timeout_ms,
                                          "Dispatcher: a worker silent this long is dropped.")
_DISPATCHER = flags.DEFINE_string("dispatcher", _D.dispatcher,
                                  "Worker: HOST:PORT of the dispatcher.")
_WORKER_HOST = flags.DEFINE_string("worker_host", _D.worker_host, "Worker: the name trainers "
                                   "reach this machine by (default: its hostname).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _ROLE.value:
    raise app.UsageError("--role=dispatcher or --role=worker is required")
  config = DataServiceConfig(role=_ROLE.value, port=_PORT.value, work_dir=_WORK_DIR.value,
                             worker_timeout_ms=_WORKER_TIMEOUT_MS.value,
                             dispatcher=_DISPATCHER.value, worker_host=_WORKER_HOST.value)
  config.validate()
  from engine.data import service  # TensorFlow starts here, after the flags are valid
  if config.role == "dispatcher":
    service.run_dispatcher(config)
  else:
    service.run_worker(config)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  usage.run(main, user_errors=(ValueError,))  # ConfigError (no dispatcher) is one
