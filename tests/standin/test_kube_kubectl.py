"""Real kubectl against the stand-in: rollout history, undo and status read like the recording."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.standins.kube.recorded import text
from tests.standins.kube.server import KubeStandIn

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

NS, NAME = "ml-prod", "fraud-scorer"


async def kubectl(kube: KubeStandIn, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kube.kubeconfig),
        "--cache-dir",
        str(kube.kubeconfig.parent / "kubectl-cache"),
        "-n",
        NS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_kubectl_rollout_history_undo_and_status(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    for version in ("v2", "v3"):
        await kube.set_version(NS, NAME, version, wait=True)
    history = await kubectl(kube, "rollout", "history", f"deployment/{NAME}")
    assert history == text("kubectl-rollout-history-before-undo.txt")

    dry_run = await kubectl(
        kube, "rollout", "undo", f"deployment/{NAME}", "--to-revision=2", "--dry-run=server"
    )
    assert dry_run == text("kubectl-rollout-undo-dry-run-server.txt")
    assert kube.rollout_history(NS, NAME) == [1, 2, 3]

    await kubectl(kube, "rollout", "undo", f"deployment/{NAME}", "--to-revision=2")
    status = await kubectl(kube, "rollout", "status", f"deployment/{NAME}", "--timeout=10s")
    assert status.splitlines()[-1] == text("kubectl-rollout-status-v1.txt").strip()
    history = await kubectl(kube, "rollout", "history", f"deployment/{NAME}")
    assert history == text("kubectl-rollout-history-after-undo.txt")
    # kubectl's own undo has no test op and sends no Authorization over plain http
    (undo,) = [r for r in kube.requests_to("PATCH") if "dryRun" not in r.query]
    assert undo.content_type == "application/json-patch+json"
    assert [op["op"] for op in undo.body] == ["replace", "replace"]
    assert "Authorization" not in undo.headers
