"""API tokens and roles. A token is shown once and stored as its SHA-256 (tokens are 256 random
bits, so a slow password hash adds nothing). Roles nest: admin > technician > operator.

Every data endpoint depends on `require(role)`: no token or an unknown/revoked one is 401, a
role too low is 403. Only health, readiness, metrics and static pages answer without a token.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from pantau.errors import ConfigError
from pantau.openapi import ROLE_ATTRIBUTE, VISIBLE
from pantau.settings import HttpSettings

Role = Literal["operator", "technician", "admin"]
ROLES: tuple[Role, ...] = ("operator", "technician", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_PREFIX = "pt_"


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


class TokenInfo(BaseModel):
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, pattern=VISIBLE, examples=["Budi (teknisi Cikarang)"])
    role: Role


class CreatedToken(TokenInfo):
    token: str = Field(description="shown this once; store it now")


def base_url(http: HttpSettings) -> str:
    """Where browsers reach Pantau: `http.public_url`, else the listening address (a LAN address
    of this machine when Pantau listens on all of them)."""
    if http.public_url:
        return http.public_url.rstrip("/")
    host = http.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - recognising "all addresses", not binding
        host = _lan_address()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}"


def cleartext_warning(http: HttpSettings, link_base: str | None = None) -> str | None:
    """Why tokens would cross a network in clear text, or None: the links Pantau hands out
    (`link_base`, default `base_url`) are http:// to an address that is not this machine's own.
    A warning, not a refusal: a pilot on a closed LAN may accept it; in production the proxy in
    front (docs/deploy.md, "HTTPS") and an https:// `http.public_url` make it go away."""
    base = link_base or base_url(http)
    if not base.startswith("http://"):
        return None
    host = base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host == "localhost" or _is_loopback(host):
        return None
    return (
        f"sign-in links point at {base}: tokens would cross the network in clear text; put "
        "the HTTPS proxy in front and set http.public_url to its https:// address "
        "(docs/deploy.md, section HTTPS)"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def phone_url(http: HttpSettings) -> str:
    """Where a phone opens the phone page."""
    return base_url(http) + "/m/"


def wall_url(http: HttpSettings) -> str:
    """Where the command-center wall's PC opens /wall."""
    return base_url(http) + "/wall"


def signin_link(http: HttpSettings, token: str) -> str:
    """A link that opens the phone page signed in. The token rides in the fragment, which a
    browser never sends to a server or a proxy log; the page keeps it and clears the address."""
    return f"{phone_url(http)}#token={token}"


def _lan_address() -> str:
    # Connecting a UDP socket sends nothing; it only picks the interface of the default route.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


async def create_token(
    conn: psycopg.AsyncConnection, name: str, role: str, created_by: str
) -> CreatedToken:
    token = _PREFIX + secrets.token_urlsafe(32)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO api_tokens (name, role, token_hash, created_by) VALUES (%s, %s, %s, %s)"
        " RETURNING id, name, role, created_at, created_by, revoked_at, last_used_at",
        (name, check_role(role), hash_token(token), created_by),
    )
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, after)"
        " VALUES (%s, 'create', 'token', %s, %s)",
        (created_by, str(row["id"]), Jsonb({"name": name, "role": role})),
    )
    return CreatedToken(**row, token=token)


async def revoke_token(conn: psycopg.AsyncConnection, token_id: int, actor: str) -> bool:
    cur = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (token_id,),
    )
    if cur.rowcount:
        await conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id) "
            "VALUES (%s, 'revoke', 'token', %s)",
            (actor, str(token_id)),
        )
    return cur.rowcount == 1


async def list_tokens(conn: psycopg.AsyncConnection) -> list[TokenInfo]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, name, role, created_at, created_by, revoked_at, last_used_at"
        " FROM api_tokens ORDER BY id"
    )
    return [TokenInfo(**row) for row in await cur.fetchall()]


async def authenticate(conn: psycopg.AsyncConnection, token: str) -> Principal | None:
    if not token.startswith(_PREFIX):
        return None
    cur = await conn.execute(
        "UPDATE api_tokens SET last_used_at = now()"
        " WHERE token_hash = %s AND revoked_at IS NULL RETURNING id, name, role",
        (hash_token(token),),
    )
    row = await cur.fetchone()
    return Principal(row[0], row[1], row[2]) if row else None


_bearer = HTTPBearer(auto_error=False, description="an API token: `pantau token create`")


def require(role: Role):  # type: ignore[no-untyped-def]
    """A FastAPI dependency: the caller's token, of at least `role`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "an API token is required: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        async with request.app.state.pool.connection() as conn:
            principal = await authenticate(conn, credentials.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown or revoked API token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.may(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role} role; your token has {principal.role}",
            )
        return principal

    setattr(dependency, ROLE_ATTRIBUTE, role)  # the OpenAPI document lists 401/403 from it
    return dependency


router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])
Admin = Annotated[Principal, Depends(require("admin"))]


@router.get("", summary="List API tokens (never the tokens themselves)")
async def get_tokens(request: Request, who: Admin) -> list[TokenInfo]:
    async with request.app.state.pool.connection() as conn:
        return await list_tokens(conn)


@router.post(
    "",
    status_code=201,
    summary="Create an API token; it is shown once",
    responses={
        201: {
            "description": "created",
            "links": {
                "RevokeToken": {
                    "operationId": "delete_token",
                    "parameters": {"token_id": "$response.body#/id"},
                }
            },
        }
    },
)
async def post_token(request: Request, body: NewToken, who: Admin) -> CreatedToken:
    async with request.app.state.pool.connection() as conn:
        return await create_token(conn, body.name, body.role, who.actor)


@router.delete(
    "/{token_id}",
    status_code=204,
    summary="Revoke an API token",
    responses={
        404: {"description": "no such token, or revoked already"},
        409: {"description": "the token making the request: revoke it with another"},
    },
)
async def delete_token(
    request: Request, token_id: Annotated[int, Path(ge=1, le=2**63 - 1)], who: Admin
) -> None:
    if token_id == who.token_id:  # an admin would lock themselves out mid-session
        raise HTTPException(
            409,
            f"token {token_id} is the one making this request; revoke it with another admin "
            "token or `pantau token revoke`",
        )
    async with request.app.state.pool.connection() as conn:
        if not await revoke_token(conn, token_id, who.actor):
            raise HTTPException(404, f"no active token {token_id}")
