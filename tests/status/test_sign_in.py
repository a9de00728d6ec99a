"""The status page's door, on the wire: sign in with the admin token in a form body, an
opaque server-side session in an HttpOnly, SameSite=Strict cookie, CSRF-checked forms,
sign-out that deletes the session, and nothing shown without one."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from receiver import keys
from receiver.web.status import LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL_SECONDS
from tests.conftest import ADMIN_TOKEN, REDIS_URL
from tests.status.helpers import cookies_set, form_csrf, session_of, sign_in, sign_in_form
from tests.worker.conftest import MODEL, NS


@pytest.fixture
async def receiver(stand):
    await stand.kube.create_deployment(NS, MODEL, "v1")
    await stand.kube.set_version(NS, MODEL, "v2", wait=True)
    return await stand.start()


async def test_without_a_session_only_the_sign_in_form_is_shown(receiver):
    csrf, login, resp = await sign_in_form(receiver)
    html = await resp.text()
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert '<form method="post" action="/login"' in html
    assert 'type="password"' in html
    assert MODEL not in html and NS not in html  # no data at all
    assert csrf == login  # the double-submit token of the form
    assert "script" not in html.lower()
    assert resp.headers["Cache-Control"] == "no-store"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


async def test_signing_in_sets_an_opaque_httponly_strict_session_cookie(receiver):
    resp = await sign_in(receiver)

    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    cookie = cookies_set(resp)[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == int(SESSION_TTL_SECONDS)
    assert not cookie["secure"]  # plain http here
    assert ADMIN_TOKEN not in cookie.value and len(cookie.value) >= 32
    # The login cookie has served its purpose.
    assert cookies_set(resp)[LOGIN_COOKIE].value == ""

    page = await receiver.get("/", headers={"Cookie": f"{SESSION_COOKIE}={cookie.value}"})
    html = await page.text()
    assert page.status == 200
    assert f"{NS}/{MODEL}" in html
    assert 'action="/logout"' in html


async def test_the_session_cookie_is_secure_behind_tls(receiver):
    resp = await sign_in(receiver, **{"X-Forwarded-Proto": "https"})
    assert resp.status == 303
    assert cookies_set(resp)[SESSION_COOKIE]["secure"] is True


async def test_the_session_is_kept_server_side_under_a_hash_never_with_the_token(
    receiver, key_prefix
):
    session_id = await session_of(receiver)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys_ = [k.decode() async for k in client.scan_iter(match=key_prefix + "*session:*")]
        assert len(keys_) == 1
        assert session_id not in keys_[0]
        value = (await client.get(keys_[0])).decode()
        ttl = await client.ttl(keys_[0])
    finally:
        await client.aclose()
    assert ADMIN_TOKEN not in value and session_id not in value
    assert 0 < ttl <= SESSION_TTL_SECONDS


async def test_a_wrong_token_is_refused_without_a_session(receiver):
    resp = await sign_in(receiver, token="not-the-token")
    assert resp.status == 401
    assert "Wrong admin token" in await resp.text()
    assert SESSION_COOKIE not in cookies_set(resp)


async def test_a_sign_in_without_the_forms_cookie_is_refused(receiver):
    csrf, _, _ = await sign_in_form(receiver)
    receiver.session.cookie_jar.clear()  # as a cross-site POST: the Strict cookie stays home
    resp = await receiver.post(
        "/login", data={"token": ADMIN_TOKEN, "csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 403
    assert SESSION_COOKIE not in cookies_set(resp)


async def test_the_token_is_never_taken_from_a_url(receiver):
    resp = await receiver.get(f"/login?token={ADMIN_TOKEN}", allow_redirects=False)
    assert resp.status == 405
    assert SESSION_COOKIE not in cookies_set(resp)
    page = await receiver.get(f"/?token={ADMIN_TOKEN}")
    assert MODEL not in await page.text()


async def test_a_forged_session_cookie_shows_no_data(receiver):
    page = await receiver.get("/", headers={"Cookie": f"{SESSION_COOKIE}={'x' * 43}"})
    assert page.status == 200
    assert MODEL not in await page.text()


async def test_signing_out_needs_the_pages_csrf_token_and_deletes_the_session(receiver):
    session_id = await session_of(receiver)
    cookie = {"Cookie": f"{SESSION_COOKIE}={session_id}"}
    html = await (await receiver.get("/", headers=cookie)).text()

    forged = await receiver.post(
        "/logout", data={"csrf": "forged"}, headers=cookie, allow_redirects=False
    )
    assert forged.status == 403
    assert MODEL in await (await receiver.get("/", headers=cookie)).text()  # still signed in

    resp = await receiver.post(
        "/logout", data={"csrf": form_csrf(html)}, headers=cookie, allow_redirects=False
    )
    assert resp.status == 303
    assert cookies_set(resp)[SESSION_COOKIE].value == ""
    # Deleted server-side: the old cookie, replayed, no longer opens the page.
    after = await receiver.get("/", headers=cookie)
    assert MODEL not in await after.text()
    assert 'action="/login"' in await after.text()


async def test_rotating_the_admin_token_ends_every_session(receiver, stand, make_settings):
    session_id = await session_of(receiver)
    rotated = await stand.start(settings={"admin_token": "rotated-admin-token"})
    page = await rotated.get("/", headers={"Cookie": f"{SESSION_COOKIE}={session_id}"})
    assert MODEL not in await page.text()
    assert receiver.app[keys.SETTINGS].key_prefix == rotated.app[keys.SETTINGS].key_prefix


async def test_the_page_is_disabled_without_an_admin_token(stand):
    client = await stand.start(settings={"admin_token": None})
    page = await client.get("/")
    assert page.status == 403
    html = await page.text()
    assert "disabled" in html and "RECEIVER_ADMIN_TOKEN" in html
    assert 'action="/login"' not in html
    resp = await client.post("/login", data={"token": "anything", "csrf": "x"})
    assert resp.status == 403
    assert SESSION_COOKIE not in cookies_set(resp)
