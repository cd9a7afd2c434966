"""Container restart: kubelet restarts the user container (a failed liveness probe) while
requests are in flight and more keep coming; queue-proxy stays.

In-flight requests must complete, the pod must be Ready again within a bound and serve
what follows; queue-proxy's 502 "connection refused" to requests that arrive while no app
listens is what Knative gives there, counted apart (pytest_knative_drain.run.restart).
Local platform only until the fixture apps can fail a real liveness probe on a cluster.
"""

import pytest

pytestmark = pytest.mark.drain_family("container_restart")


def test_container_restart(drain, drain_case):
    drain.check(drain.run(drain_case))
