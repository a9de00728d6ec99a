"""Model rollback receiver: Alertmanager webhook in, a verified Kubernetes rollback out.

The package is layered (see ``[tool.importlinter]`` in pyproject.toml): ``cli``/``web`` wire
things up, ``service`` orchestrates, the domain modules decide and act, ``k8s`` and ``store``
are the only doors to the cluster and to Redis.
"""

__version__ = "0.1.0"
