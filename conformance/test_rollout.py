"""Revision rollout: a template change moves traffic to a new revision while the old
revision's pod still holds long requests.

Needs a cluster: Knative's controllers create the new revision and scale the old one away.
"""

import pytest

pytestmark = pytest.mark.drain_family("rollout")


def test_rollout(drain, drain_case):
    drain.check(drain.run(drain_case))
