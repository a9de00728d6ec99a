"""Adapters for the external services: Kubernetes, Prometheus, Slack. Nothing else imports their libraries."""
