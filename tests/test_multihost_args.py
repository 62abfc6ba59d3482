"""Where the processes of a multi-process run come from (`multihost.cluster_from`): the
flags, else Keras' KERAS_DISTRIBUTION_* variables, each mistake named where it was made.
Pure Python: no Keras, TensorFlow or JAX is imported."""

from __future__ import annotations

import pytest

from cnnbuilder.errors import UsageError
from cnnbuilder.training import multihost
from cnnbuilder.training.multihost import Cluster, cluster_from

pytestmark = pytest.mark.fast

KERAS_VARIABLES = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234",
                   "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                   "KERAS_DISTRIBUTION_PROCESS_ID": "1"}


def test_single_process_runs_need_no_cluster():
    assert cluster_from(environ={}) is None
    assert cluster_from(num_processes=1, environ={}) is None
    assert cluster_from(num_processes="1", process_id="0", environ={}) is None


def test_flags_describe_the_cluster():
    assert cluster_from("host0:1234", "4", "3", environ={}) == Cluster("host0:1234", 4, 3)


def test_keras_variables_describe_the_cluster_and_flags_win():
    assert cluster_from(environ=KERAS_VARIABLES) == Cluster("10.0.0.1:1234", 2, 1)
    assert cluster_from(process_id=0, environ=KERAS_VARIABLES) == Cluster("10.0.0.1:1234", 2, 0)


@pytest.mark.parametrize("args, environ, named", [
    (("host0:1234", None, None), {}, "missing: --num-processes, --process-id"),
    ((None, 2, 0), {}, "missing: --coordinator"),
    (("host0", 2, 0), {}, "--coordinator must be HOST:PORT"),
    (("host0:99999", 2, 0), {}, "--coordinator must be HOST:PORT"),
    (("host0:1234", "two", 0), {}, "--num-processes must be an integer, got 'two'"),
    (("host0:1234", 0, 0), {}, "--num-processes must be at least 1"),
    (("host0:1234", 2, 2), {}, "--process-id is 2, but a run of 2 processes numbers them 0 to 1"),
    (("host0:1234", 2, -1), {}, "--process-id must be at least 0"),
    ((None, None, None), {**KERAS_VARIABLES, "KERAS_DISTRIBUTION_PROCESS_ID": "5"},
     "KERAS_DISTRIBUTION_PROCESS_ID is 5"),
    ((None, 3, None), KERAS_VARIABLES,
     "KERAS_DISTRIBUTION_JOB_ADDRESSES lists 2 addresses but --num-processes is 3"),
])
def test_mistakes_are_named_where_they_were_made(args, environ, named):
    with pytest.raises(UsageError, match=named.replace("(", r"\(").replace(")", r"\)")):
        cluster_from(*args, environ=environ)


def test_heartbeat_timeout_can_be_set_but_not_to_nonsense():
    assert multihost.heartbeat_seconds({}) == multihost.HEARTBEAT_SECONDS
    assert multihost.heartbeat_seconds({"CNNBUILDER_HEARTBEAT_TIMEOUT": "15"}) == 15
    with pytest.raises(UsageError, match="CNNBUILDER_HEARTBEAT_TIMEOUT must be at least 5"):
        multihost.heartbeat_seconds({"CNNBUILDER_HEARTBEAT_TIMEOUT": "1"})


def test_the_lost_process_message_names_it_and_says_how_to_resume():
    worker = multihost.lost_message([1], Cluster("host0:1234", 2, 0), during="training")
    assert worker.startswith("process 1 of the 2 processes of this run was lost")
    assert "during training, so process 0 stopped too" in worker
    assert worker.endswith("rerun the same command on every process to resume.")
    coordinator = multihost.lost_message([0], Cluster("host0:1234", 2, 1))
    assert coordinator.startswith("process 0 of the 2 processes of this run (the coordinator, "
                                  "host0:1234) was lost")
    assert multihost.lost_message([], Cluster("host0:1234", 3, 0)).startswith(
        "one of the 3 processes of this run was lost")
