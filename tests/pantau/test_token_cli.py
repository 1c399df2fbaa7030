"""`pantau token ...` as an admin runs it: a list with a header, and a sign-in link with its QR
code for a technician's phone."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import segno

from tests.fixtures.servers import run_pantau


def pantau(db: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    if not env:
        return run_pantau(*args, db=db, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "PANTAU_DATABASE__URL": db, **env},
    )


def test_list_has_a_header(migrated_db: str, tmp_path: Path) -> None:
    empty = pantau(migrated_db, tmp_path, "token", "list")
    assert empty.returncode == 0, empty.stderr
    header, hint = empty.stdout.splitlines()
    assert header.split() == ["id", "role", "state", "last", "used", "name"]
    assert hint == "no tokens yet: pantau token create --role ... --name ..."
    made = pantau(migrated_db, tmp_path, "token", "create", "--role", "operator", "--name", "Wall")
    assert made.returncode == 0, made.stderr
    listed = pantau(migrated_db, tmp_path, "token", "list").stdout.splitlines()
    assert listed[0].split() == ["id", "role", "state", "last", "used", "name"]
    assert listed[1].split() == ["1", "operator", "active", "never", "Wall"]
    # The columns line up under their headings.
    assert listed[1].index("operator") == listed[0].index("role")
    assert listed[1].index("Wall") == listed[0].index("name")


def test_create_with_qr_prints_a_sign_in_link_and_its_code(
    migrated_db: str, tmp_path: Path
) -> None:
    made = pantau(
        migrated_db,
        tmp_path,
        "token",
        "create",
        "--role",
        "technician",
        "--name",
        "Budi",
        "--qr",
        PANTAU_HTTP__PUBLIC_URL="https://pantau.bekasikab.example/",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[1]
    assert token.startswith("pt_")
    link = f"https://pantau.bekasikab.example/m/#token={token}"
    assert link in made.stdout.splitlines()
    # The code printed is the link's QR code (segno draws the same matrix for the same text).
    drawn = io.StringIO()
    segno.make(link, error="m").terminal(out=drawn, compact=True)
    assert drawn.getvalue() in made.stdout
    assert "note:" not in made.stderr  # a public address: no warning
    assert "clear text" not in made.stderr  # https://: no warning either

    # Without a public URL: the listening address, and a note that a phone needs another one.
    local = pantau(
        migrated_db,
        tmp_path,
        "token",
        "create",
        "--role",
        "technician",
        "--name",
        "Sari",
        "--qr",
        PANTAU_HTTP__PORT="8099",
    )
    assert local.returncode == 0, local.stderr
    assert "http://127.0.0.1:8099/m/#token=pt_" in local.stdout
    assert "set http.public_url or pass --url" in local.stderr

    given = pantau(
        migrated_db,
        tmp_path,
        "token",
        "create",
        "--role",
        "technician",
        "--name",
        "Eko",
        "--qr",
        "--url",
        "http://192.168.1.20:8080",
    )
    assert "http://192.168.1.20:8080/m/#token=pt_" in given.stdout
    # http:// to another machine: the token would cross the LAN in clear text (docs/deploy.md).
    assert "tokens would cross the network in clear text" in given.stderr
    assert "clear text" not in local.stderr  # 127.0.0.1 is the machine's own

    bad = pantau(
        migrated_db, tmp_path, "token", "create", "--role", "technician", "--name", "X", "--url",
        "192.168.1.20",
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--url '192.168.1.20': expected the phone page's address" in bad.stderr
    # Refused before anything was made: still three tokens.
    assert len(pantau(migrated_db, tmp_path, "token", "list").stdout.splitlines()) == 4

    # Without --qr the output stays as it was: the token, no link.
    plain = pantau(migrated_db, tmp_path, "token", "create", "--role", "admin", "--name", "Ops")
    assert "#token=" not in plain.stdout


def test_create_with_wall_prints_the_walls_sign_in_link(migrated_db: str, tmp_path: Path) -> None:
    made = pantau(
        migrated_db,
        tmp_path,
        "token",
        "create",
        "--role",
        "operator",
        "--name",
        "Dinding",
        "--wall",
        PANTAU_HTTP__PUBLIC_URL="https://pantau.bekasikab.example/",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[1]
    link = f"https://pantau.bekasikab.example/wall#token={token}"
    assert link in made.stdout.splitlines()
    assert "/m/" not in made.stdout

    # With --qr, the wall's link is the code's; --url takes Pantau's address or the wall's.
    coded = pantau(
        migrated_db, tmp_path, "token", "create", "--role", "operator", "--name", "Dinding 2",
        "--wall", "--qr", "--url", "http://10.20.0.9:8080/wall/",
    )  # fmt: skip
    assert coded.returncode == 0, coded.stderr
    link = f"http://10.20.0.9:8080/wall#token={coded.stdout.splitlines()[1]}"
    assert link in coded.stdout.splitlines()
    drawn = io.StringIO()
    segno.make(link, error="m").terminal(out=drawn, compact=True)
    assert drawn.getvalue() in coded.stdout

    local = pantau(
        migrated_db, tmp_path, "token", "create", "--role", "operator", "--name", "Dinding 3",
        "--wall", PANTAU_HTTP__PORT="8099",
    )  # fmt: skip
    assert "http://127.0.0.1:8099/wall#token=pt_" in local.stdout
    assert "another PC needs the address" in local.stderr

    # A wall PC keeps its token in the browser: only an operator's, which only reads.
    admin = pantau(
        migrated_db, tmp_path, "token", "create", "--role", "admin", "--name", "X", "--wall"
    )
    assert admin.returncode == 2
    assert "expected --role operator" in admin.stderr
    assert len(pantau(migrated_db, tmp_path, "token", "list").stdout.splitlines()) == 4
