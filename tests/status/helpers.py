"""Helpers shared by this package's tests."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

from receiver.web.status import LOGIN_COOKIE, SESSION_COOKIE
from tests.conftest import ADMIN_TOKEN


def cookies_set(resp: Any) -> dict[str, Any]:
    """The cookies a response sets, with their attributes (``Set-Cookie`` as sent)."""
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return {name: jar[name] for name in jar}


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def sign_in_form(client: Any, **headers: str) -> tuple[str, str, Any]:
    """GET / unsigned: (the form's csrf, the login cookie's value, the response)."""
    resp = await client.get("/", headers=headers, allow_redirects=False)
    html = await resp.text()
    cookie = cookies_set(resp)[LOGIN_COOKIE]
    return form_csrf(html), cookie.value, resp


async def sign_in(client: Any, token: str = ADMIN_TOKEN, **headers: str) -> Any:
    csrf, login, _ = await sign_in_form(client)
    return await client.post(
        "/login",
        data={"token": token, "csrf": csrf},
        headers={"Cookie": f"{LOGIN_COOKIE}={login}", **headers},
        allow_redirects=False,
    )


async def session_of(client: Any) -> str:
    resp = await sign_in(client)
    assert resp.status == 303, await resp.text()
    return cookies_set(resp)[SESSION_COOKIE].value
