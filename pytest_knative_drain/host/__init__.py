"""This machine's plumbing: the Docker engine, the privileged-container runtime fix, and
the signals that end a run. Nothing here knows Knative.
"""
