"""`pantau grafana db-role NAME`: the PostgreSQL login Grafana's data source uses, created
against a real PostgreSQL: it logs in with its password (SCRAM over TCP), reads the wall views
and nothing else; the password is read from a file or standard input, never an argument."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest


@pytest.fixture
def role(migrated_db: str) -> Iterator[str]:
    name = f"grafana_{uuid.uuid4().hex[:8]}"  # roles are per cluster: one of this test's own
    yield name
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")


def db_role(db: str, *args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantau", "grafana", "db-role", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "PANTAU_DATABASE__URL": db},
    )


def _tcp(db: str, user: str, password: str) -> str:
    url = urlsplit(db)
    port = parse_qs(url.query)["port"][0]
    return (
        f"host=127.0.0.1 port={port} dbname={url.path.strip('/')} user={user} password={password}"
    )


def test_the_login_reads_the_wall_and_nothing_else(
    migrated_db: str, role: str, tmp_path: Path
) -> None:
    password = "grafana-wall-password-1"
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    done = db_role(migrated_db, role, "--password-file", str(secret), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"role {role}: created" in done.stdout
    assert password not in done.stdout + done.stderr

    with psycopg.connect(migrated_db) as admin:
        row = admin.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolpassword LIKE 'SCRAM-SHA-256$%%',"
            " pg_has_role(oid, 'pantau_wall', 'MEMBER') FROM pg_authid WHERE rolname = %s",
            (role,),
        ).fetchone()
        assert row == (True, False, False, True, True)

    with psycopg.connect(_tcp(migrated_db, role, password)) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SELECT count(*) FROM wall.status_by_kecamatan").fetchone() == (23,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM devices")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_tcp(migrated_db, role, "not-the-password"))

    # Again, the new password from standard input: the same role, its password changed.
    changed = db_role(migrated_db, role, stdin="another-long-password\n", cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert f"role {role}: password changed" in changed.stdout
    with psycopg.connect(_tcp(migrated_db, role, "another-long-password")) as conn:
        assert conn.execute("SELECT total FROM wall.status_totals").fetchone() == (0,)


def test_refusals_name_what_was_expected(migrated_db: str, role: str, tmp_path: Path) -> None:
    short = db_role(migrated_db, role, stdin="short\n", cwd=tmp_path)
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr

    bad_name = db_role(migrated_db, "Grafana-Wall", stdin="long-enough-password\n", cwd=tmp_path)
    assert bad_name.returncode == 2
    assert "lower-case letters, digits and _" in bad_name.stderr

    # Pantau's own user (here the cluster's superuser) is never turned into a wall login.
    me = urlsplit(migrated_db).username or ""
    own = db_role(migrated_db, me, stdin="long-enough-password\n", cwd=tmp_path)
    assert own.returncode == 2
    assert "is not a pantau_wall login" in own.stderr

    missing = db_role(migrated_db, role, "--password-file", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read it" in missing.stderr
