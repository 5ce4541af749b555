"""Signing in to the console's pages through Starlette's TestClient (the development sign-in),
and the CSRF token every form carries (``http`` signs in to a console served by uvicorn)."""

from __future__ import annotations

import html
import re

from httpx2 import Response
from starlette.testclient import TestClient

AUDITOR = "ada-auditor"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "every form carries a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, user: str = AUDITOR, role: str = "auditor") -> str:
    """Signs ``client`` in as ``user`` in ``role``; the signed-in page's CSRF token."""
    page = client.get("/signin")
    answer = client.post(
        "/signin",
        data={
            "csrf": csrf_of(page.text),
            "method": "development",
            "user": user,
            "role": role,
            "purpose": "confidentiality_review",
        },
    )
    assert answer.status_code == 200, answer.text
    assert "Find a case" in answer.text
    return csrf_of(answer.text)


def sign_in_pasting(
    client: TestClient, token: str, purpose: str = "confidentiality_review"
) -> Response:
    """Posts the sign-in form with a pasted ``token`` (method ``token``): the answer."""
    page = client.get("/signin")
    return client.post(
        "/signin",
        data={"csrf": csrf_of(page.text), "method": "token", "token": token, "purpose": purpose},
    )


def accessed_by(client: TestClient, case_id: str, user: str) -> list[str]:
    """The purposes of ``user``'s recorded accesses to the case, read on every access-log page
    by the client's own signed-in reader."""
    found: list[str] = []
    address: str | None = f"/cases/{case_id}/access"
    while address:
        page = client.get(address).text
        log = page.split('id="access-log"')[1].split("</table>")[0]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", log, re.S):
            cells = re.findall(r"<td>(.*?)</td>", row, re.S)
            if cells and cells[1] == user:
                found.append(cells[4])
        following = re.search(r'<a href="([^"]+)" rel="next">', page)
        address = html.unescape(following.group(1)) if following else None
    return found
