"""Driving the console over HTTP as a browser would: its forms, their CSRF tokens, its cookies."""

from __future__ import annotations

import re

import httpx

SIGN_IN = "/console/sign-in"
TASKS = "/console/tasks"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """Open the sign-in form and send it with `key`: the answer (303 to the tasks when it worked)."""
    form = await http.get(SIGN_IN)
    assert form.status_code == 200, form.text
    return await http.post(SIGN_IN, data={"api_key": key, "csrf": csrf_of(form.text)})


async def signed_in(http: httpx.AsyncClient, key: str) -> str:
    """Sign in with `key`; the CSRF token of the session's forms."""
    answer = await sign_in(http, key)
    assert (answer.status_code, answer.headers.get("location")) == (303, TASKS), answer.text
    tasks = await http.get(TASKS)
    assert tasks.status_code == 200, tasks.text
    return csrf_of(tasks.text)
