"""The drain conformance suite: one test module per trigger family.

Ships in the wheel as ``pytest_knative_drain.conformance`` (pyproject maps this
directory), so the same files run from a checkout (``pytest conformance``) and from an
install (``pytest --pyargs pytest_knative_drain.conformance``).
"""
