"""Where the pods under test run, one module or folder per platform.

- local/: emulated pods on this machine's Docker engine (``--platform=local``);
- kind.py, kind_cluster.py: a kind cluster built here (``--platform=kind``);
- existing.py: a cluster the user already runs (``--platform=existing``);
- serving_platform.py: what the two cluster platforms share;
- cluster/: the cluster code they stand on (client, manifests, the case's pod);
- pod.py: what every platform's pod target reports (timeline, termination);
- cleanup.py: ``knative-drain cleanup``.
"""
