"""Typed readers for the environment.

Every setting the platform takes from the environment goes through one of these, so a bad
value stops the process at start with a message that names the variable, instead of
surfacing later as a confusing failure deep inside a request or an association.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class ConfigError(Exception):
    """A variable in the environment holds a value the platform cannot use."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str) -> str:
    return _raw(name) or default


def env_optional(name: str) -> str | None:
    return _raw(name)


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}={number} is above the maximum {maximum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or networks (10.0.0.5, 10.0.1.0/24, ::1)."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from None
    return tuple(networks)


def env_table(
    name: str, default: dict[str, dict[str, int]], rows: set[str], columns: set[str]
) -> dict[str, dict[str, int]]:
    """A table of positive integers, `default` with cells overridden as `row.column=n`
    pairs separated by commas, e.g. `emergency.CT=45,routine.DR=90`."""
    table = {row: dict(cells) for row, cells in default.items()}
    value = _raw(name)
    if value is None:
        return table
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, _, number = item.partition("=")
        row, _, column = key.strip().partition(".")
        if row not in rows or column not in columns:
            raise ConfigError(
                f"{name}: {item!r} must be row.column=number with row one of {', '.join(sorted(rows))} "
                f"and column one of {', '.join(sorted(columns))}"
            )
        try:
            cell = int(number)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not row.column=number") from None
        if cell < 1:
            raise ConfigError(f"{name}: {item!r} must be at least 1")
        table.setdefault(row, {})[column] = cell
    return table


def env_hours(name: str, default: str) -> tuple[int, int]:
    """A span of the day as HH:MM-HH:MM, e.g. 18:00-08:00 (it may run past midnight), as
    minutes after midnight of its start and end. The start and end must differ."""
    value = _raw(name) or default
    try:
        start_text, end_text = (part.strip() for part in value.split("-"))
        minutes = []
        for text in (start_text, end_text):
            hours, _, mins = text.partition(":")
            if not (hours.isdigit() and mins.isdigit() and len(mins) == 2):
                raise ValueError(text)
            h, m = int(hours), int(mins)
            if h > 23 or m > 59:
                raise ValueError(text)
            minutes.append(h * 60 + m)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a span of the day like 18:00-08:00") from None
    if minutes[0] == minutes[1]:
        raise ConfigError(f"{name}={value!r} starts and ends at the same time")
    return minutes[0], minutes[1]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return Path(value).expanduser() if value else default


def env_file(name: str) -> Path | None:
    """An optional path to a file that must exist (a certificate, a key)."""
    value = _raw(name)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={value!r} is not a readable file")
    return path


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = _raw(name) or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(sorted(choices))}")
    return value


def env_ae_title(name: str, default: str) -> str:
    """A DICOM AE title: 1 to 16 characters of the default repertoire, no backslash."""
    value = _raw(name) or default
    if len(value) > 16 or "\\" in value or not value.isascii() or not value.isprintable():
        raise ConfigError(f"{name}={value!r} is not a valid AE title (1-16 ASCII characters, no backslash)")
    return value


def database_from_url(name: str, url: str, *, sqlite_timeout: float) -> dict[str, Any]:
    """A Django DATABASES entry from a postgres:// or sqlite:/// URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative/path is relative to the working directory; sqlite:////abs is absolute.
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise ConfigError(f"{name}={url!r} names no database file")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                # WAL lets the DICOM receiver write while the web server reads; IMMEDIATE
                # transactions take the write lock up front, so two writers queue on the
                # busy timeout instead of failing with "database is locked" on upgrade.
                # synchronous=FULL fsyncs the WAL at every commit: the receiver answers
                # Success after the index commit, which must then survive a power cut,
                # not only the process's death (NORMAL). About 0.5-0.8 ms a commit here.
                "timeout": sqlite_timeout,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
            },
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        if not parts.path.strip("/"):
            raise ConfigError(f"{name}={url!r} names no database")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{name}={url!r} has an invalid port") from None
        options: dict[str, Any] = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ConfigError(f"{name}={url!r}: the scheme must be postgres:// or sqlite:///")
