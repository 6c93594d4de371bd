"""Multi-worker flags: local worker processes (experiments/_distributed.py)."""

from absl import flags

WORKERS = flags.DEFINE_integer(
    "workers", 1,
    "Worker processes to run on this host under MultiWorkerMirroredStrategy "
    "(TF_CONFIG on loopback ports, set for each); 1 runs one process. On a "
    "cluster, start one process per machine with TF_CONFIG set instead and "
    "leave --workers at 1 (docs/distributed.md).", lower_bound=1)
WORKER_INDEX = flags.DEFINE_integer(
    "worker_index", None, "Set by --workers for each worker it starts; not "
    "for users.", lower_bound=0)
WORKER_RUN_DIR = flags.DEFINE_string(
    "worker_run_dir", None, "Set by --workers: the run directory the workers "
    "share; not for users.")
WORKER_PORTS = flags.DEFINE_list(
    "worker_ports", None, "Set by --workers: the workers' loopback ports; "
    "not for users.")

# Set by the launcher for its workers: left out of the experiments' --help.
INTERNAL = ("worker_index", "worker_run_dir", "worker_ports")
