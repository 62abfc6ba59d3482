"""One training run over several processes (hosts): `jax.distributed` under Keras' names.

Every process runs the same command; process 0 is the coordinator. Where the processes
are and who is who comes from the arguments (`--coordinator`, `--num-processes`,
`--process-id`) or from the variables `keras.distribution.initialize` reads, so a SLURM or
Kubernetes launcher that sets them works unchanged:

    KERAS_DISTRIBUTION_JOB_ADDRESSES   host0:1234[,host1:1234,...]  (the first is the coordinator)
    KERAS_DISTRIBUTION_NUM_PROCESSES   2
    KERAS_DISTRIBUTION_PROCESS_ID      0 .. N-1

`jax.distributed.initialize` is called here rather than through
`keras.distribution.initialize` for one setting Keras does not pass on: the heartbeat
timeout, which bounds how long the others take to notice a lost process (JAX's default
is 100 s; ours `HEARTBEAT_SECONDS`). Keras' other step, a random seed agreed by all
processes, is moot: cnnbuilder seeds every run with its `seed`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

from cnnbuilder.errors import RunError, UsageError

JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
# How long a silent process is waited for before the run stops (seconds); a lost process
# is noticed within about this long. CNNBUILDER_HEARTBEAT_TIMEOUT overrides it.
HEARTBEAT_SECONDS = 60
# How long the processes wait for each other to start.
CONNECT_SECONDS = 300
NEEDS_JAX = ("training over several processes needs the JAX backend: add --backend jax "
             "(Keras 3 does not train under TensorFlow's MultiWorkerMirroredStrategy).")


@dataclass(frozen=True)
class Cluster:
    """The processes of one run: the coordinator's address, how many, and which one this is."""

    coordinator: str
    num_processes: int
    process_id: int


def _integer(value, what: str, lowest: int) -> int:
    """`value` as an int >= `lowest`, or a UsageError naming `what` (a flag or variable)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{what} must be an integer, got {value!r}.") from None
    if number < lowest:
        raise UsageError(f"{what} must be at least {lowest}, got {number}.")
    return number


def cluster_from(coordinator: str | None = None, num_processes=None, process_id=None,
                 environ=None) -> Cluster | None:
    """The run's `Cluster` from the arguments, else Keras' variables in `environ`; None for
    a single-process run. A UsageError names the flag or variable that is wrong."""
    environ = os.environ if environ is None else environ
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    names = {"--coordinator": JOB_ADDRESSES, "--num-processes": NUM_PROCESSES,
             "--process-id": PROCESS_ID}
    where = {}
    for flag, value in given.items():
        if value is None and environ.get(names[flag]) not in (None, ""):
            given[flag], where[flag] = environ[names[flag]], names[flag]
        else:
            where[flag] = flag
    if all(value is None for value in given.values()):
        return None
    count = (_integer(given["--num-processes"], where["--num-processes"], 1)
             if given["--num-processes"] is not None else None)
    if count == 1 and given["--process-id"] in (None, "0", 0):
        return None
    missing = [where[flag] for flag, value in given.items() if value is None]
    if missing:
        raise UsageError(
            "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
            f"--process-id I on every process (or {JOB_ADDRESSES}, {NUM_PROCESSES} and "
            f"{PROCESS_ID}); missing: {', '.join(missing)}.")
    addresses = [a.strip() for a in str(given["--coordinator"]).split(",") if a.strip()]
    if len(addresses) > 1 and len(addresses) != count:
        raise UsageError(f"{where['--coordinator']} lists {len(addresses)} addresses but "
                         f"{where['--num-processes']} is {count}.")
    address = addresses[0] if addresses else ""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{where['--coordinator']} must be HOST:PORT (the coordinator, process "
                         f"0), got {given['--coordinator']!r}.")
    index = _integer(given["--process-id"], where["--process-id"], 0)
    if index >= count:
        raise UsageError(f"{where['--process-id']} is {index}, but a run of {count} processes "
                         f"numbers them 0 to {count - 1}.")
    return Cluster(address, count, index)


def heartbeat_seconds(environ=None) -> int:
    """The heartbeat timeout: CNNBUILDER_HEARTBEAT_TIMEOUT, else `HEARTBEAT_SECONDS`."""
    environ = os.environ if environ is None else environ
    value = environ.get("CNNBUILDER_HEARTBEAT_TIMEOUT")
    return HEARTBEAT_SECONDS if value in (None, "") else _integer(
        value, "CNNBUILDER_HEARTBEAT_TIMEOUT", 5)


def initialize(cluster: Cluster) -> None:
    """Join this process to the run's other processes (once per process, before any model
    is built); afterwards `jax.devices()` lists the devices of all of them."""
    import keras

    if keras.backend.backend() != "jax":
        raise UsageError(NEEDS_JAX)
    import jax

    if jax.distributed.is_initialized():
        return
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
            process_id=cluster.process_id, initialization_timeout=CONNECT_SECONDS,
            heartbeat_timeout_seconds=heartbeat_seconds())
    except Exception as exc:  # noqa: BLE001 - JAX reports an unreachable peer as many types
        raise RunError(
            f"process {cluster.process_id} of {cluster.num_processes} could not join the run "
            f"coordinated at {cluster.coordinator} within {CONNECT_SECONDS} s ({exc}); start "
            "the same command on every process, with the coordinator's address reachable "
            "from all of them.") from None


def is_multiprocess() -> bool:
    """Whether this process is one of several of a run (never without JAX imported: a
    TensorFlow run does not load it)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1


def barrier(name: str) -> None:
    """Wait until every process of the run has reached the barrier `name`."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_int(value: int) -> int:
    """Process 0's `value`, on every process."""
    if not is_multiprocess():
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def lost_processes() -> list[int]:
    """The processes of the run that stopped answering (waits up to the heartbeat timeout:
    JAX reports the live ones once every live one has asked)."""
    import jax
    from jax._src import distributed  # the client of jax.distributed; no public handle

    client = distributed.global_state.client
    everyone = list(range(jax.process_count()))
    try:
        alive = client.get_live_nodes(everyone)
    except Exception:  # noqa: BLE001 - the coordinator itself is gone
        return [0]
    return [index for index in everyone if index not in alive]


def lost_message(lost: list[int], cluster: Cluster, during: str = "") -> str:
    """What the survivors of a lost process say: which one, and how to go on."""
    run = f"of the {cluster.num_processes} processes of this run"
    if not lost:
        who = f"one {run}"  # JAX gave up without naming it
    elif lost == [0] and cluster.coordinator:
        who = f"process 0 {run} (the coordinator, {cluster.coordinator})"
    else:
        who = f"process {', '.join(str(i) for i in lost)} {run}"
    when = f" during {during}" if during else ""
    return (f"{who} was lost (it died or stopped answering){when}, so process "
            f"{cluster.process_id} stopped too. The run directory holds every finished "
            "epoch: rerun the same command on every process to resume.")


class ProcessLost(RunError):
    """Another process of a multi-process run died or stopped answering."""


@contextlib.contextmanager
def stops_on_lost_process(what: str):
    """Within the block, a failure caused by a lost process becomes a `ProcessLost` naming
    it; other failures pass through. Single-process runs are untouched."""
    try:
        yield
    except Exception as exc:
        if not is_multiprocess() or isinstance(exc, ProcessLost):
            raise
        import jax

        me, count = jax.process_index(), jax.process_count()
        # JAX may end this process as soon as it is sure a peer is gone: say so first.
        print(f"cnnbuilder: process {me} of {count}: {what} failed ({' '.join(str(exc).split())[:300]}); "
              "checking which processes are still running...", file=sys.stderr, flush=True)
        lost = lost_processes()
        if not lost:
            raise
        raise ProcessLost(lost_message(lost, Cluster("", count, me), during=what)) from None
