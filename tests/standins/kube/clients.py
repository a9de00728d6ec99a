"""Official-client handles built from the stand-in's kubeconfig, as the product loads it."""

from __future__ import annotations

from pathlib import Path

import kubernetes
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config


async def aio_api_client(kubeconfig: Path) -> aio_client.ApiClient:
    """A `kubernetes.aio` ApiClient through `load_kube_config` (caller closes it)."""
    configuration = aio_client.Configuration()
    await aio_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return aio_client.ApiClient(configuration)


def sync_api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A sync `kubernetes.client` ApiClient through `load_kube_config` (caller closes it)."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return kubernetes.client.ApiClient(configuration)


__all__ = ["aio_api_client", "sync_api_client"]
