"""Settings come from the environment and a bad value stops the start with its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from cloudpacs.env import ConfigError, database_from_url, env_ae_title, env_bool, env_int

ROOT = Path(__file__).resolve().parent.parent


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DICOM_PORT", "eleven"),
        ("DICOM_PORT", "70000"),
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://root@localhost/yunying"),
        ("DICOM_AE_TITLE", "A_TITLE_FAR_TOO_LONG"),
        ("CELERY_BROKER_URL", "amqp://guest@localhost//"),
        ("LANGUAGE_CODE", "fr"),
        ("DICOM_OVERWRITE_POLICY", "always"),
        ("STORAGE_BACKEND", "ftp"),
        ("S3_TIMEOUT", "soon"),
        ("S3_ADDRESSING_STYLE", "sideways"),
        ("DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES", "0"),
    ],
)
def test_a_bad_value_stops_the_start_with_the_variables_name(variable, value):
    result = start_django(**{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr
    assert "ConfigError" in result.stderr


def test_the_object_store_needs_a_bucket():
    result = start_django(STORAGE_BACKEND="s3")
    assert result.returncode != 0
    assert "S3_BUCKET" in result.stderr


def test_it_starts_with_nothing_configured(tmp_path):
    result = start_django(YUNYING_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr


def test_readers_parse_what_they_promise(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_AET", "XUANWO_CT")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 0, minimum=1) == 42
    assert env_ae_title("X_AET", "CLOUDPACS") == "XUANWO_CT"
    monkeypatch.setenv("X_AET", "BAD\\AET")
    with pytest.raises(ConfigError, match="X_AET"):
        env_ae_title("X_AET", "CLOUDPACS")


def test_a_postgres_url_becomes_a_django_database():
    db = database_from_url("DATABASE_URL", "postgres://pacs:s%40cret@db.example:6543/yunying", sqlite_timeout=5)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "yunying",
        "pacs",
        "s@cret",
        "db.example",
        "6543",
    )


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    db = database_from_url("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite3", sqlite_timeout=30)
    assert db["NAME"] == f"{tmp_path}/x.sqlite3"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    # A row committed before the receiver's Success survives a power cut, not only a kill.
    assert "synchronous=FULL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] == 30


@pytest.mark.django_db
def test_the_running_database_is_the_configured_one():
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys")
            assert cursor.fetchone()[0] == 1
    else:
        assert connection.vendor == "postgresql"


def test_a_fresh_checkout_without_var_can_migrate(tmp_path):
    var = tmp_path / "not-yet-there"
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    environment["YUNYING_VAR_DIR"] = str(var)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (var / "yunying.sqlite3").exists()
