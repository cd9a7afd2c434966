"""Pod deletion: a revision pod is deleted while requests are in flight.

Every app is judged on every scenario; the fixture apps that mishandle SIGTERM
are negative controls and must be caught, and so must a drain-clean app under a
broken Knative config (see pytest_knative_drain.matrix.scenarios).

Markers on every case: ``drain_scenario(name)`` and ``drain_config(name)`` (so
``-k pod_delete_long`` works besides ``-k pod-delete-long``); ``slow`` marks
scenarios whose requests outlive queue-proxy's 30 s quiet period at the quick
profile, so ``-m "not slow"`` is the short smoke set.
"""

import pytest

pytestmark = pytest.mark.drain_family("pod_delete")


def test_pod_delete(drain, drain_case):
    drain.check(drain.run(drain_case))
