"""A real cluster, through the official kubernetes client: what the kind and existing
platforms share.

- api.py: the client, errors in one line, version detection, bounded waits;
- apply.py: manifests applied server-side, CRDs first;
- ksvc.py: the Knative Service a case runs;
- changes.py: ConfigMap patches that undo themselves, the run's namespaces;
- knative_config.py: a scenario's Knative configuration put in place and taken back;
- knative_pod.py: one case's Service and revision pod, from Ready to gone;
- pod_watch.py, pod_logs.py: the pod timeline and the container logs of a case;
- faults.py: when the cluster failed under a case (no verdict then);
- triggers.py: the API calls that end a pod's life in each trigger family.
"""
