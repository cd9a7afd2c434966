"""Node drain: the node of the revision pod is cordoned and its pods evicted through the
Eviction API while long requests are in flight.

Needs a cluster with a node to move to: --platform=kind makes two workers when a
node-drain case is selected; the node is uncordoned afterwards.
"""

import pytest

pytestmark = pytest.mark.drain_family("node_drain")


def test_node_drain(drain, drain_case):
    drain.check(drain.run(drain_case))
