"""Scale-down: the autoscaler removes one of two pods that both hold long requests.

Needs a cluster: the scale bounds are patched on the revision's PodAutoscaler and
Knative's autoscaler and the Deployment controller pick the pod that goes.
"""

import pytest

pytestmark = pytest.mark.drain_family("scale_down")


def test_scale_down(drain, drain_case):
    drain.check(drain.run(drain_case))
