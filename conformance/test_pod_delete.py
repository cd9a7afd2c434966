"""Pod deletion: a revision pod is deleted while long requests are in flight.

Every app is judged on every scenario; the fixture apps that mishandle SIGTERM
are negative controls and must be caught (see pytest_knative_drain.scenarios).

Markers: every case carries ``drain_scenario(name)`` (so ``-k pod_delete_long``
works besides ``-k pod-delete-long``); ``slow`` marks scenarios whose requests
outlive queue-proxy's 30 s quiet period at the quick profile, so
``-m "not slow"`` is the short smoke set.
"""

import pytest

from pytest_knative_drain.scenarios import DRAIN_QUIET_S, SCENARIOS

POD_DELETE = (
    "pod-delete-short",
    "pod-delete-long",
    "second-batch-during-termination",
    "deletion-timeliness",
)


def _case(name: str) -> object:
    marks = [pytest.mark.drain_scenario(name)]
    if SCENARIOS[name].plan("quick").last_request_end_s > DRAIN_QUIET_S:
        marks.append(pytest.mark.slow)
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("scenario", [_case(name) for name in POD_DELETE])
def test_pod_delete(drain, scenario):
    result = drain.run(scenario)
    drain.check(result)
