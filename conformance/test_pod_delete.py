"""Pod deletion: a revision pod is deleted while long requests are in flight.

Every app is judged on every scenario; the fixture apps that mishandle SIGTERM
are negative controls and must be caught (see pytest_knative_drain.scenarios).
"""

import pytest


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario",
    [
        "pod-delete-short",
        "pod-delete-long",
        "second-batch-during-termination",
        "deletion-timeliness",
    ],
)
def test_pod_delete(drain, scenario):
    result = drain.run(scenario)
    drain.check(result)
