"""Signing in to a console served by uvicorn (``start_console``), as a browser does."""

from __future__ import annotations

import re

import aiohttp


def cookie_jar() -> aiohttp.CookieJar:
    """Keeps the cookies of 127.0.0.1 too (aiohttp's default drops those of IP addresses)."""
    return aiohttp.CookieJar(unsafe=True)


async def sign_in(http: aiohttp.ClientSession, url: str, user: str = "ada-auditor") -> None:
    """The development sign-in, as an auditor reviewing confidentiality."""
    async with http.get(url + "/signin") as page:
        found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert found is not None, "the sign-in form carries a CSRF token"
    form = {
        "csrf": found.group(1),
        "method": "development",
        "user": user,
        "role": "auditor",
        "purpose": "confidentiality_review",
    }
    async with http.post(url + "/signin", data=form) as signed_in:
        assert "Find a case" in await signed_in.text()
