"""A tuning worker that is alive but makes no progress loses its trial like a dead one
(issue 17): its heartbeat falls silent when no epoch has finished for the trial timeout."""

from __future__ import annotations

import threading
import time

from cnnbuilder.tuning.chief import Heartbeat, Progress


class CountingOracle:
    """Stands in for the chief's oracle: counts the heartbeats of one trial."""

    def __init__(self):
        self.beats = 0
        self.lock = threading.Lock()

    def get_trial(self, trial_id):
        with self.lock:
            self.beats += 1


def beats_during(oracle: CountingOracle, seconds: float) -> int:
    before = oracle.beats
    time.sleep(seconds)
    return oracle.beats - before


def test_a_worker_that_finishes_no_epoch_falls_silent():
    oracle = CountingOracle()
    with Heartbeat(oracle, "00", interval=0.05, progress_timeout=0.5) as heartbeat:
        assert beats_during(oracle, 0.3) >= 1  # within the timeout: beating
        time.sleep(0.4)  # now past the timeout without a finished epoch
        assert heartbeat.stalled()
        assert beats_during(oracle, 0.4) == 0


def test_each_finished_epoch_keeps_the_heartbeat_going():
    oracle = CountingOracle()
    with Heartbeat(oracle, "00", interval=0.05, progress_timeout=0.3) as heartbeat:
        progress = Progress(heartbeat)
        for epoch in range(6):  # an epoch every 0.15 s: always within the timeout
            time.sleep(0.15)
            progress.on_epoch_end(epoch)
            assert not heartbeat.stalled()
        assert beats_during(oracle, 0.2) >= 1
    stopped = oracle.beats
    time.sleep(0.2)
    assert oracle.beats == stopped  # no heartbeat once the trial is over


def test_without_a_progress_timeout_the_heartbeat_only_proves_life():
    oracle = CountingOracle()
    with Heartbeat(oracle, "00", interval=0.05) as heartbeat:
        time.sleep(0.3)
        assert not heartbeat.stalled()
        assert beats_during(oracle, 0.3) >= 1
