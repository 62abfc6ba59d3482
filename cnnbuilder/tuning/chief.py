"""Distributed search: the chief's serving loop, the workers' heartbeat, the roles.

Every process runs the same `tune` call under KerasTuner's environment variables
(``KERASTUNER_TUNER_ID=chief`` on one, ``tuner0``, ``tuner1``... on the others, with
``KERASTUNER_ORACLE_IP`` / ``_PORT`` naming the chief). The chief serves the oracle over
gRPC and trains nothing; workers ask it for trials. A worker sends a heartbeat while it
runs a trial; the chief ends the trial of a worker silent for the trial timeout
(``CNNBUILDER_TRIAL_TIMEOUT``, default 600 s), so a dead machine never stalls the search
(docs/distributed_tuning.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

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
    (a background thread calling the oracle's `get_trial`)."""

    def __init__(self, oracle, trial_id, interval: float):
        self.oracle, self.trial_id, self.interval = oracle, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}",
                                       daemon=True)

    def _run(self):
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # the chief may be restarting
                self.oracle.get_trial(self.trial_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        return False


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
