"""Acknowledgements: beside the outcome, from a fixed list of root causes."""

from __future__ import annotations

from receiver.models import ROOT_CAUSES
from tests.control.conftest import event_kinds, get, post
from tests.worker.conftest import deliver, wait_state


async def test_acknowledge_keeps_the_state_and_records_who_when_why(world, delivery):
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    ack = f"/api/incidents/{item['id']}/acknowledge"
    body = {"actor": "frank", "root_cause": "model_quality", "note": "label leak", "extra": 1}
    detail = await post(client, ack, body, 200)
    assert detail["state"] == "verified"
    assert detail["acknowledgement"]["actor"] == "admin:frank"
    assert detail["acknowledgement"]["root_cause"] == "model_quality"
    assert detail["acknowledgement"]["note"] == "label leak"
    assert event_kinds(detail)[-1] == "acknowledged"
    listed = (await get(client, "/api/incidents"))["items"][0]
    assert listed["acknowledgement"]["root_cause"] == "model_quality"
    assert listed["state"] == "verified"


async def test_an_unknown_root_cause_is_400_naming_the_list(world, delivery):
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    ack = f"/api/incidents/{item['id']}/acknowledge"
    answer = await post(client, ack, {"root_cause": "gremlins"}, 400)
    for cause in ROOT_CAUSES:
        assert cause in answer["error"]
    missing = await post(client, ack, {}, 400)
    assert "root_cause is required" in missing["error"]
    detail = await get(client, f"/api/incidents/{item['id']}")
    assert detail["acknowledgement"] is None


async def test_acknowledging_an_unknown_incident_is_404(world):
    client = await world.make_app()
    answer = await post(
        client, "/api/incidents/inc-000000000000/acknowledge", {"root_cause": "other"}, 404
    )
    assert "inc-000000000000" in answer["error"]


async def test_a_body_that_is_not_a_json_object_is_400(world):
    client = await world.make_app()
    from tests.control.conftest import ADMIN

    for raw in (b"not json", b"[1, 2]"):
        resp = await client.post(
            "/api/pause", data=raw, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert resp.status == 400, raw
        assert "JSON" in (await resp.json())["error"]
