"""Label Studio's users, for showing annotators by e-mail.

Label Studio 1.23.2's webhooks carry an annotation's `completed_by` as the user's id only
(`webhooks.serializers_for_hooks.AnnotationWebhookSerializer` is a plain ModelSerializer),
so the store keeps the id unless a payload had the e-mail (an expanded `completed_by` in a
JSON export). Reports turn ids into e-mails with the users list of the Label Studio the
annotations came from, when it can be asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeling.studio.client import StudioClient


def user_emails(client: StudioClient) -> dict[int, str]:
    """`{user id: e-mail}` for every user of the client's organization (GET /api/users/)."""
    reply = client.request("GET", "/api/users/")
    users = reply.get("results", []) if isinstance(reply, Mapping) else reply or []
    return {
        int(user["id"]): str(user["email"])
        for user in users
        if isinstance(user, Mapping) and isinstance(user.get("id"), int) and user.get("email")
    }


def annotator_name(stored: str | None, emails: Mapping[int, str]) -> str:
    """How an annotator is shown: the stored e-mail, else the e-mail Label Studio has for
    the stored user id, else "Label Studio user ID" (or the stored name as it is)."""
    if stored is None or stored == "":
        return "unknown annotator"
    if stored.isdigit():
        return emails.get(int(stored)) or f"Label Studio user {stored}"
    return stored
