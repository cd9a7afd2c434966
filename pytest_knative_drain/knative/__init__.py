"""What this project knows about Knative releases, as data: the catalog of releases, each
release's queue-proxy environment, its manifests, internal TLS, the kind install plan, and
Knative's own known drain bugs. Nothing here runs a container or talks to a cluster.
"""
