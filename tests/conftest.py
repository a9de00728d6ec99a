"""Shared fixtures. Stand-ins for external services live in tests/standins/ and register here."""

pytest_plugins: list[str] = []
