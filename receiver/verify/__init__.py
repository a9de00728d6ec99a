"""Verification of a rollback: health probes, the wait for the rollout, confirmation."""
