"""Multi-worker runs of an experiment: --workers=N on one host, or TF_CONFIG.

With --workers=N > 1 the launching process starts N copies of the
experiment (`python -m MODULE` with the same flags), each with TF_CONFIG
naming the N workers on loopback ports and its own index, waits for them,
and relays the chief's output (worker 0); the others' output goes to
RUN_DIR/worker-I.log. Each worker builds `strategy()`:
MultiWorkerMirroredStrategy wherever TF_CONFIG names a cluster (set by the
launcher, or by the user on a real cluster), else the default strategy.
"""

import json
import os
import subprocess
import sys
from typing import Callable, Tuple

from experiments import _ports
from flags import distributed as distributed_flags


def is_launcher() -> bool:
  """True in the process the user started with --workers > 1."""
  return (distributed_flags.WORKERS.value > 1 and
          distributed_flags.WORKER_INDEX.value is None)


def launch(module: str, run_dir: str) -> int:
  """Runs --workers copies of `module` sharing `run_dir`; the chief's code."""
  count = distributed_flags.WORKERS.value
  ports = _ports.free_ports(count)
  base = [sys.executable, "-m", module, *sys.argv[1:],
          f"--worker_run_dir={run_dir}", f"--worker_ports={','.join(ports)}"]
  workers = []
  for index in range(count):
    log = (None if index == 0 else
           open(os.path.join(run_dir, f"worker-{index}.log"), "w"))
    workers.append((subprocess.Popen(base + [f"--worker_index={index}"],
                                     stdout=log, stderr=log), log))
  codes = [worker.wait() for worker, _ in workers]
  for _, log in workers:
    if log is not None:
      log.close()
  failed = [i for i, code in enumerate(codes) if code]
  if failed:
    print(f"workers {failed} failed (exit codes "
          f"{[codes[i] for i in failed]}); see {run_dir}/worker-I.log",
          file=sys.stderr)
  return max(codes, key=abs)


def start(make_run_dir: Callable[[], str]) -> Tuple[object, str]:
  """The experiment's strategy and run directory, or the launcher's exit.

  In the process the user started with --workers > 1, makes the run
  directory, runs the workers (the same module, `python -m`) and exits with
  their status. Elsewhere (a worker, or one process) returns `strategy()`
  and the run directory: the launcher's in a worker, else
  `make_run_dir()`. Call it before any other TensorFlow op.
  """
  if is_launcher():
    module = getattr(sys.modules["__main__"].__spec__, "name", None)
    if module is None:
      raise RuntimeError("--workers needs the experiment run as a module: "
                         "python -m experiments.NAME")
    sys.exit(launch(module, make_run_dir()))
  return strategy(), run_dir(None) or make_run_dir()


def in_cluster() -> bool:
  """True in a worker of several (--workers, or TF_CONFIG set)."""
  return (distributed_flags.WORKER_INDEX.value is not None
          or "TF_CONFIG" in os.environ)


def user_command(module: str) -> str:
  """The command the user ran: the launcher's flags for its workers left
  out."""
  internal = tuple(f"--{name}=" for name in distributed_flags.INTERNAL)
  return " ".join(["python -m", module] + [
      arg for arg in sys.argv[1:] if not arg.startswith(internal)])


def broadcast_from_chief(strategy, array):
  """The chief's value of `array` on every worker (itself elsewhere).

  For what each worker computes but only one may release (e.g. noisy mean
  samples): the chief's copy is kept, the others' are discarded unseen.
  Variables created in a multi-worker strategy's scope take the chief's
  initial value on every worker.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if strategy.num_replicas_in_sync == 1:
    return array
  with strategy.scope():
    shared = tf.Variable(array, trainable=False)
  return shared.numpy()


def strategy():
  """The run's strategy; call it before any other TensorFlow op.

  In a worker started by `launch`, TF_CONFIG is set here from the flags.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  index = distributed_flags.WORKER_INDEX.value
  if index is not None:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{port}" for port in
                               distributed_flags.WORKER_PORTS.value]},
        "task": {"type": "worker", "index": index}})
  if "TF_CONFIG" in os.environ:
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief() -> bool:
  """The process that writes results: TF_CONFIG's chief, else worker 0 (or
  the only process)."""
  config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  task = config.get("task", {})
  if "chief" in config.get("cluster", {}):
    return task.get("type") == "chief"
  return task.get("index", 0) == 0


def run_dir(default: str) -> str:
  """The shared run directory (--worker_run_dir in a worker), else
  `default`."""
  return distributed_flags.WORKER_RUN_DIR.value or default


def private_dir(directory: str) -> str:
  """`directory` on the chief; a worker's own subdirectory elsewhere (so
  that two workers never write the same file)."""
  if is_chief():
    return directory
  config = json.loads(os.environ["TF_CONFIG"])
  path = os.path.join(directory, f"worker-{config['task']['index']}")
  os.makedirs(path, exist_ok=True)
  return path
