"""The PostgreSQL login Grafana's data source uses: a role that can log in and is a member of
pantau_wall (so it reads the `wall` views and nothing else). Its password reaches the server
already hashed (SCRAM-SHA-256, computed by libpq here), so no server log ever holds it."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pantau.errors import ConfigError

WALL_ROLE = "pantau_wall"
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIN_PASSWORD = 12
CONNECTION_LIMIT = 20
STATEMENT_TIMEOUT = "30s"  # a wall query that runs longer is a bug, not a wait


@dataclass(frozen=True)
class Outcome:
    name: str
    created: bool  # False: it existed, its password was changed


def check_name(name: str) -> None:
    if not NAME.match(name) or name.startswith("pg_") or name == WALL_ROLE:
        raise ConfigError(
            f"role name {name!r}: expected lower-case letters, digits and _ (at most 63, not "
            f"starting with pg_, not {WALL_ROLE} itself), e.g. grafana_wall"
        )


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD or password != password.strip() or "\n" in password:
        raise ConfigError(
            f"the password: expected at least {MIN_PASSWORD} characters on one line, without "
            "leading or trailing spaces"
        )


async def create_or_update(conn: psycopg.AsyncConnection, name: str, password: str) -> Outcome:
    """Create the login role in pantau_wall, or change the password of one that already is such
    a role. Refuses an existing role that is anything else (Pantau's own user, a superuser...)."""
    check_name(name)
    check_password(password)
    cur = await conn.execute(
        "SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb,"
        " pg_has_role(r.oid, %s, 'MEMBER') AS wall_member,"
        " r.rolname = current_user AS is_me"
        " FROM pg_roles r WHERE r.rolname = %s",
        (WALL_ROLE, name),
    )
    row = await cur.fetchone()
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WALL_ROLE,))
    if await cur.fetchone() is None:
        raise ConfigError(
            f"the role {WALL_ROLE} does not exist: run `pantau db migrate` first (as a user "
            "with CREATEROLE), or create it as README's Grafana section says"
        )
    if row is not None:
        superuser, createrole, createdb, member, is_me = row
        if is_me or superuser or createrole or createdb or not member:
            raise ConfigError(
                f"role {name!r} exists and is not a {WALL_ROLE} login (it is "
                f"{'the user Pantau connects as' if is_me else 'another role'}): expected a new "
                "name, or one created by this command"
            )
    verifier = conn.pgconn.encrypt_password(
        password.encode(), name.encode(), b"scram-sha-256"
    ).decode()
    ident = sql.Identifier(name)
    try:
        async with conn.transaction():
            if row is None:
                await conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE"
                        " CONNECTION LIMIT {} PASSWORD {} IN ROLE {}"
                    ).format(
                        ident,
                        sql.Literal(CONNECTION_LIMIT),
                        sql.Literal(verifier),
                        sql.Identifier(WALL_ROLE),
                    )
                )
            else:
                await conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(verifier))
                )
            await conn.execute(
                sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                    ident, sql.Literal(STATEMENT_TIMEOUT)
                )
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"the database user cannot create or change roles ({exc.diag.message_primary}): "
            "expected a database.url user with CREATEROLE and ADMIN on pantau_wall, or run the "
            "SQL in README's Grafana section as a superuser"
        ) from None
    return Outcome(name, created=row is None)
