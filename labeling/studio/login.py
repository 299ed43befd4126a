"""Label Studio logins without a browser: a session through its login form (the tests'
browser pages and the screenshot benchmarks hand its cookie to Chromium) and a personal
access token made with that session."""

from __future__ import annotations

import requests

from labeling.studio.client import StudioError


def login_session(url: str, username: str, password: str, timeout: float = 30.0):
    """A requests.Session logged in through Label Studio's login form (session cookie)."""
    url = url.rstrip("/")
    session = requests.Session()
    session.get(f"{url}/user/login/", timeout=timeout).raise_for_status()
    csrf = session.cookies.get("csrftoken")
    if not csrf:
        raise StudioError(f"{url}/user/login/ set no csrftoken cookie: is this Label Studio?")
    reply = session.post(
        f"{url}/user/login/",
        data={"email": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{url}/user/login/"},
        timeout=timeout,
        allow_redirects=False,
    )
    if reply.status_code not in (301, 302) or "sessionid" not in session.cookies:
        raise ValueError(f"Label Studio login failed for {username} (wrong password?)")
    return session


def create_personal_access_token(url: str, username: str, password: str) -> str:
    """Make a personal access token (a JWT refresh token) as the user, without a browser."""
    url = url.rstrip("/")
    session = login_session(url, username, password)
    reply = session.post(
        f"{url}/api/token/",
        headers={"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": f"{url}/"},
        timeout=30,
    )
    if reply.status_code >= 400:
        raise StudioError(f"POST /api/token/: HTTP {reply.status_code}: {reply.text[:300]}")
    token = reply.json().get("token")
    if not token:
        raise StudioError(f"POST /api/token/ answered without a token: {reply.text[:300]}")
    return token
