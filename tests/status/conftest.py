"""The status page's tests run the receiver of the readiness tests (``stand``)."""

from tests.readiness.conftest import stand

__all__ = ["stand"]
