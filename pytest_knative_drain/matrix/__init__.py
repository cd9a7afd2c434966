"""The conformance matrix as data: scenarios (trigger x load shape), Knative
configurations, fixture apps with their expected outcome, and the cases they make.
"""
