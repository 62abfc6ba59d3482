"""Distributed search: the chief's serving loop, the workers' heartbeat, the roles.

Every process runs the same `tune` call under KerasTuner's environment variables
(``KERASTUNER_TUNER_ID=chief`` on one, ``tuner0``, ``tuner1``... on the others, with
``KERASTUNER_ORACLE_IP`` / ``_PORT`` naming the chief). The chief serves the oracle over
gRPC and trains nothing; workers ask it for trials. A worker sends a heartbeat while it
runs a trial; the chief ends the trial of a worker silent for the trial timeout
(``CNNBUILDER_TRIAL_TIMEOUT``, default 600 s), so a dead machine never stalls the search
(docs/distributed_tuning.md).

A heartbeat proves that the process is alive, not that it trains: a worker hung inside a
step (a deadlocked data pipeline, a stuck collective) would keep its trial for ever. So
the heartbeat also stops when no epoch has finished for the trial timeout (`Progress`
tells it each finished epoch), and the chief hands such a trial on as a dead worker's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import keras

from cnnbuilder.errors import RunError, TuningError
from cnnbuilder.tuning import keras_tuner_hooks as hooks

TIMEOUT_ENV = "CNNBUILDER_TRIAL_TIMEOUT"
DEFAULT_TRIAL_TIMEOUT = 600.0


def role() -> str:
    """'chief', 'worker' or 'local' from KerasTuner's environment variables."""
    try:
        return hooks.role()
    except RuntimeError as exc:  # KERASTUNER_ORACLE_IP without a port or a tuner id
        raise TuningError(f"distributed tuning: {exc}") from None


def trial_timeout(value=None) -> float:
    """The trial timeout in seconds: `value`, else ``CNNBUILDER_TRIAL_TIMEOUT``, else 600."""
    where = "trial_timeout"
    if value is None:
        text = os.environ.get(TIMEOUT_ENV)
        if not text:
            return DEFAULT_TRIAL_TIMEOUT
        where = f"the environment variable {TIMEOUT_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise TuningError(f"{where} must be a number of seconds, got {text!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TuningError(f"{where} must be a positive number of seconds, got {value!r}.")
    return float(value)


def heartbeat_interval(timeout: float) -> float:
    """Five heartbeats per timeout, at most one every 10 s and at least one every 0.2 s."""
    return max(0.2, min(10.0, timeout / 5))


class Heartbeat:
    """While a worker runs a trial, tell the chief every `interval` seconds it is alive
    (a background thread calling the oracle's `get_trial`) - as long as it makes progress:
    after `progress_timeout` seconds without a finished epoch (`progressed`) it falls
    silent, so the chief gives the trial to another worker."""

    def __init__(self, oracle, trial_id, interval: float, progress_timeout: float | None = None):
        self.oracle, self.trial_id, self.interval = oracle, trial_id, interval
        self.progress_timeout = progress_timeout
        self.last_progress = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}",
                                       daemon=True)

    def progressed(self) -> None:
        """Record a finished epoch."""
        self.last_progress = time.monotonic()

    def stalled(self) -> bool:
        """Whether no epoch has finished for `progress_timeout` seconds."""
        return (self.progress_timeout is not None
                and time.monotonic() - self.last_progress > self.progress_timeout)

    def _run(self):
        while not self.stop.wait(self.interval):
            if self.stalled():
                continue  # alive but hung: let the chief see silence
            with contextlib.suppress(Exception):  # the chief may be restarting
                self.oracle.get_trial(self.trial_id)

    def __enter__(self):
        self.last_progress = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        return False


class Progress(keras.callbacks.Callback):
    """Tells a `Heartbeat` each finished epoch of the trial's `fit`."""

    def __init__(self, heartbeat: Heartbeat):
        super().__init__()
        self.heartbeat = heartbeat

    def on_epoch_end(self, epoch, logs=None):
        self.heartbeat.progressed()


def serve(oracle, poll: float = 0.25) -> None:
    """The chief: serve `oracle` to the workers until the search is over, ending the
    trials of workers that went silent (KerasTuner's own loop would wait for them for ever)."""
    from concurrent import futures

    import grpc

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = hooks.oracle_service(oracle, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise RunError(f"the chief cannot listen on {address} (KERASTUNER_ORACLE_IP/PORT): "
                       "the port is in use or the address is not one of this machine's.")
    server.start()
    try:
        while True:
            time.sleep(poll)
            oracle.expire_lost_trials()
            if servicer.stop_triggered and hooks.chief_may_stop(oracle):
                break
    finally:
        server.stop(grace=2)
