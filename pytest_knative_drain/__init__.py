"""pytest-knative-drain: prove Knative Serving drops no request while pods terminate."""

__version__ = "0.1.0"
