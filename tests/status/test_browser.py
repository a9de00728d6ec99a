"""The status page in a real headless Chromium (Debian's ``chromium``), JavaScript off:
sign in, see the models and an incident's timeline, sign out; nothing without the cookie;
alert labels shown as text. Screenshots are kept as test artifacts (``tmp_path``, and
``$TEST_ARTIFACTS`` when set)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, Page, async_playwright

from receiver import keys
from receiver.models import Acknowledgement
from receiver.web.status import SESSION_COOKIE
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.worker.conftest import MODEL, NS, SAMPLE_REQUEST, world  # noqa: F401 (fixture)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOSTILE_MODEL = "<script>window.__xss=1</script>"
HOSTILE_VERSION = '<img src=x onerror="window.__xss=2">'


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the status page is tested in Debian's Chromium; install it"
            " with `apt-get update && apt-get install -y chromium`"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


def artifact(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes; copied to ``$TEST_ARTIFACTS`` by ``keep``."""
    return tmp_path / name


def keep(path: Path) -> None:
    target = os.environ.get("TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def two_models(world_: Any, path: Path) -> Path:
    """The world's model, and one whose Deployment does not exist (not ready)."""
    policy = yaml.safe_load(world_.policy_file.read_text())
    policy["models"][0]["drills"] = True
    policy["models"].append(
        {
            "name": "ranker",
            "namespace": NS,
            "tier": "experimental",
            "deployment": "ranker",
            "health": {"base_url": world_.model_server.url, "sample_request": SAMPLE_REQUEST},
        }
    )
    path.write_text(yaml.safe_dump(policy))
    return path


async def deliver(client: Any, body: dict[str, Any], headers: dict[str, str]) -> None:
    resp = await client.post("/webhook/alertmanager", data=json.dumps(body), headers=headers)
    assert resp.status == 200, await resp.text()


async def incident_in(client: Any, state: str, model: str = MODEL) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        resp = await client.get("/api/incidents", headers=ADMIN)
        items = (await resp.json())["items"]
        return next((i for i in items if i["state"] == state and i["model"] == model), None)

    return await wait_for(found, timeout=20, interval=0.05, what=f"an incident {state}")


@pytest.fixture
async def receiver(world, delivery, tmp_path) -> tuple[Any, str]:  # noqa: F811 (fixture)
    """A receiver that rolled fraud-scorer back (acknowledged), recorded an alert with
    hostile labels, and checked readiness; and the id of the rollback's incident."""
    client = await world.make_app(policy=two_models(world, tmp_path / "policy-two.yaml"))
    fixture = delivery("firing_single")
    await deliver(client, fixture.payload, fixture.headers)
    rolled_back = await incident_in(client, "verified")

    hostile = copy.deepcopy(fixture.payload)
    alert = hostile["alerts"][0]
    alert["labels"].update(model=HOSTILE_MODEL, model_version=HOSTILE_VERSION)
    alert["fingerprint"] = "0123456789abcdef"
    hostile["commonLabels"] = {}
    hostile["groupLabels"] = {}
    await deliver(client, hostile, fixture.headers)
    await incident_in(client, "notified", model=HOSTILE_MODEL)

    def acknowledge(incident: Any) -> None:
        incident.acknowledgement = Acknowledgement(
            actor="admin:ana",
            at=datetime(2026, 11, 25, 8, 30, tzinfo=UTC),
            root_cause="model_quality",
            note="v3 was trained on a truncated <week> of data",
        )

    await client.app[keys.STORE].update_incident(rolled_back["id"], acknowledge)
    for path in (f"/api/models/{NS}/{MODEL}/check", f"/api/models/{NS}/ranker/check"):
        assert (await client.post(path, headers=ADMIN)).status == 200
    return client, rolled_back["id"]


async def no_data(page: Page) -> None:
    text = await page.inner_text("body")
    assert "Sign in" in text
    assert MODEL not in text and "ranker" not in text and "inc-" not in text


async def test_sign_in_see_models_and_timelines_sign_out(receiver, browser, tmp_path):
    client, incident_id = receiver
    base = str(client.make_url("")).rstrip("/")
    context = await browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()

    response = await page.goto(base + "/")
    assert response is not None and response.status == 200
    await no_data(page)

    await page.fill("input[name=token]", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/")
    assert "token" not in page.url  # never in a URL

    (cookie,) = [c for c in await context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]

    # The models: fraud-scorer ready to go back to v2; ranker not ready, with the reason.
    rows = page.locator("table.models tbody tr")
    assert await rows.count() == 2
    scorer = await rows.nth(0).inner_text()
    assert f"{NS}/{MODEL}" in scorer and "Ready" in scorer and "v2" in scorer
    assert "rollout-undo" in scorer
    ranker = await rows.nth(1).inner_text()
    assert "Not ready" in ranker
    assert f"Deployment {NS}/ranker not found" in ranker
    assert "Automation is active" in await page.inner_text("#global-pause") or (
        "not reported" in await page.inner_text("#global-pause")
    )

    # The rollback's incident with its timeline in absolute UTC times.
    card = page.locator(f"article#{incident_id}")
    text = await card.inner_text()
    assert incident_id in text and "verified" in text
    for step in ("Alert started", "Received", "Switched", "Healthy", "Confirmed"):
        assert step in text
    assert "2026-11-25 07:42:05 UTC" in text  # the alert's startsAt, as Alertmanager sent it
    assert "Acknowledged" in text and "by admin:ana: model_quality" in text
    assert "truncated <week> of data" in text
    assert await card.locator("ol.timeline li.done").count() >= 5

    # Alert labels are data: shown as text, never run or parsed as markup.
    hostile = await page.inner_text("#incidents")
    assert HOSTILE_MODEL in hostile and HOSTILE_VERSION in hostile
    assert await page.locator("script").count() == 0
    assert await page.locator("img").count() == 0

    shot = artifact(tmp_path, "status-page.png")
    await page.screenshot(path=str(shot), full_page=True)
    keep(shot)

    await page.click("header.top button[type=submit]")
    await page.wait_for_url(base + "/")
    await no_data(page)
    assert [c for c in await context.cookies() if c["name"] == SESSION_COOKIE] == []
    # The old session is gone server-side too: replaying its cookie shows nothing.
    await context.add_cookies([{**cookie, "url": base + "/"} | {"domain": None, "path": None}])
    await page.goto(base + "/")
    await no_data(page)
    await context.close()


async def test_on_a_phone_the_page_fits_the_screen(receiver, browser, tmp_path):
    client, incident_id = receiver
    base = str(client.make_url("")).rstrip("/")
    context = await browser.new_context(
        java_script_enabled=False,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
    )
    page = await context.new_page()
    await page.goto(base + "/")
    await page.fill("input[name=token]", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/")
    assert incident_id in await page.inner_text("#incidents")

    # Nothing wider than the screen: no sideways scrolling to read a model or a timeline.
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    shot = artifact(tmp_path, "status-page-phone.png")
    await page.screenshot(path=str(shot), full_page=True)
    keep(shot)
    await context.close()


async def test_without_the_cookie_no_data_is_shown(receiver, browser):
    client, _ = receiver
    base = str(client.make_url("")).rstrip("/")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(base + "/")
    await no_data(page)
    html = await page.content()
    assert MODEL not in html and "inc-" not in html
    await context.close()
