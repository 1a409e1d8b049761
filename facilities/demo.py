"""The demo's logins. One password per role, so a newcomer can try every page from the
printed list; DEMO_MODE=false (production) hides them and no demo account should exist."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from facilities.models import User

DEMO_PASSWORDS: dict[str, str] = {
    User.Role.TECHNOLOGIST: "xiangzhen-2025",
    User.Role.RADIOLOGIST: "yingxiang-2025",
    User.Role.ADMINISTRATOR: "guanli-2025",
}

# The seed names its accounts tech_<township>, dr_<surname> and admin.
DEMO_USERNAME_PREFIXES = ("tech_", "dr_", "admin")


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role_label: str
    facility: str


def demo_password(role: str) -> str:
    return DEMO_PASSWORDS[role]


def demo_accounts(users: QuerySet[User] | Iterable[User]) -> list[DemoAccount]:
    """The demo users among `users` with their demo passwords, administrators first."""
    order: dict[str, int] = {User.Role.ADMINISTRATOR: 0, User.Role.RADIOLOGIST: 1, User.Role.TECHNOLOGIST: 2}
    chosen = [
        u
        for u in (users.select_related("facility") if isinstance(users, QuerySet) else users)
        if u.username.startswith(DEMO_USERNAME_PREFIXES) and u.role in DEMO_PASSWORDS
    ]
    chosen.sort(key=lambda u: (order.get(u.role, 9), u.username))
    return [
        DemoAccount(
            username=u.username,
            password=DEMO_PASSWORDS[u.role],
            role_label=str(u.get_role_display()),
            facility=u.facility.short_name if u.facility else "",
        )
        for u in chosen
    ]
