"""The flags that say where `train` and `tune` run: `--backend` (the Keras backend, chosen
before Keras is first imported) and the multi-process flags `--coordinator`,
`--num-processes`, `--process-id` (docs/distributed_training.md)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys

from cnnbuilder.errors import UsageError

BACKENDS = ("tensorflow", "jax")


def add_backend_arguments(p, processes: bool = True) -> None:
    """`--backend`, and with `processes` the multi-process flags (`train`; a search spreads
    over hosts with KerasTuner's chief and workers instead)."""
    p.add_argument("--backend", choices=BACKENDS,
                   help="Keras backend (default: $KERAS_BACKEND, else tensorflow); jax trains "
                        "on all local devices with keras.distribution, and on many hosts")
    if not processes:
        return
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process (jax): address of process 0, the same on every process "
                        "(default $KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    p.add_argument("--num-processes", metavar="N",
                   help="multi-process (jax): processes in the run "
                        "(default $KERAS_DISTRIBUTION_NUM_PROCESSES)")
    p.add_argument("--process-id", metavar="I",
                   help="multi-process (jax): this process's number, 0 to N-1; 0 writes the "
                        "output (default $KERAS_DISTRIBUTION_PROCESS_ID)")


def select_backend(name: str | None) -> None:
    """Make `name` the Keras backend of this process (None: leave $KERAS_BACKEND). Keras
    reads the choice once, when it is first imported."""
    if name is None:
        return
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise UsageError(f"--backend {name}: Keras is already running on "
                             f"{keras.backend.backend()} in this process.")
    if name == "jax" and importlib.util.find_spec("jax") is None:
        from cnnbuilder.extras import missing_message

        raise UsageError(f"--backend jax: {missing_message('jax')}")
    os.environ["KERAS_BACKEND"] = name


def join_processes(args) -> None:
    """Join the other processes of a multi-process run, when the flags or Keras' variables
    describe one."""
    from cnnbuilder.training import multihost

    cluster = multihost.cluster_from(args.coordinator, args.num_processes, args.process_id)
    if cluster is not None:
        multihost.initialize(cluster)


# Set in the process a supervisor starts, so it trains rather than supervise again.
_SUPERVISED = "CNNBUILDER_SUPERVISED_PROCESS"
# What JAX's distributed runtime prints when it ends a process because a peer is gone.
_UNHEALTHY_TASK = re.compile(r"task:(\d+)")
_RUNTIME_GAVE_UP = "JAX distributed service detected fatal errors"


def supervise(args, argv: list[str]) -> int | None:
    """Run a multi-process `train` in a child process and name the lost process if the
    run stops for one; None (nothing done) for a single-process run or in the child.

    When a peer dies, JAX's runtime ends the survivors itself, from a native thread, with
    a log line that names a dead worker ("task:1") but not a dead coordinator, and no
    Python code runs after it. The supervisor, which never imports Keras or JAX, reads
    the child's stderr (passing it on) and says which process was lost and what to do.
    The child dies with the supervisor (Linux: PR_SET_PDEATHSIG), so killing either
    kills the process of the run."""
    from cnnbuilder.training import multihost

    if os.environ.get(_SUPERVISED):
        return None
    cluster = multihost.cluster_from(args.coordinator, args.num_processes, args.process_id)
    if cluster is None:
        return None
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":
        raise UsageError(multihost.NEEDS_JAX)
    child = subprocess.Popen(
        [sys.executable, "-m", "cnnbuilder.cli", *argv], stderr=subprocess.PIPE,
        env={**os.environ, _SUPERVISED: "1"}, preexec_fn=_die_with_parent, text=True,
        errors="replace", bufsize=1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: child.send_signal(number))
    lost, gave_up, named = set(), False, False
    for line in child.stderr:
        sys.stderr.write(line)
        gave_up = gave_up or _RUNTIME_GAVE_UP in line
        # The child's own ProcessLost message (when JAX let it finish): nothing to add.
        named = named or ("processes of this run" in line and " was lost " in line)
        if "unhealthy" in line or "heartbeat timeout" in line or line.startswith("/job:"):
            lost.update(int(n) for n in _UNHEALTHY_TASK.findall(line))
    status = child.wait()
    status = status if status >= 0 else 128 - status  # killed by a signal: 128 + its number
    if status and gave_up and not named:
        lost.discard(cluster.process_id)
        if not lost and cluster.process_id != 0:
            lost = {0}  # the coordinator is gone: JAX names no task then
        print(f"cnnbuilder train: error: {multihost.lost_message(sorted(lost), cluster)}",
              file=sys.stderr)
    return status


def _die_with_parent() -> None:
    """In the child, before it runs: be killed when the supervisor dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
