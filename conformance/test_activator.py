"""Activator restarts: an activator pod is deleted (graceful) or killed (grace 0) while
requests pass through it (target-burst-capacity -1).

Needs a cluster with >= 2 activator pods (the activator HPA's minReplicas is raised for
the scenario and restored afterwards; on --platform=existing only with
--allow-cluster-config). The graceful case must lose nothing; the kill is held to
Knative's own tolerance of 0.90 (test/ha/activator_test.go). The broken-config twin
(activator grace below the request length) must be caught.
"""

import pytest

pytestmark = pytest.mark.drain_family("activator")


def test_activator(drain, drain_case):
    drain.check(drain.run(drain_case))
