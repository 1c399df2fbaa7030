"""The writer's connection notices a dead peer: TCP keepalives and a user timeout on its socket."""

import socket

from psycopg.conninfo import make_conninfo

from ingest.writer import KEEPALIVES, Writer
from pantau.embedded import PostgresCluster


def test_the_writers_tcp_socket_has_keepalives_and_a_user_timeout(
    postgres_cluster: PostgresCluster, database_url: str
) -> None:
    # Over TCP (keepalives do not apply to the Unix socket), with the cluster's password.
    password = postgres_cluster.password_file.read_text().strip()
    writer = Writer(make_conninfo(database_url, host="127.0.0.1", password=password))
    writer.connect()
    try:
        conn = writer._conn  # the connection the writer COPYs on
        assert conn is not None
        params = conn.info.get_parameters()
        assert {k: params.get(k) for k in KEEPALIVES} == {k: str(v) for k, v in KEEPALIVES.items()}
        assert "statement_timeout" not in params.get("options", "")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        # What the kernel was told for the socket itself (not the server's end of it).
        sock = socket.socket(fileno=conn.fileno())
        try:
            assert sock.family == socket.AF_INET
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            tcp = socket.IPPROTO_TCP
            assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == KEEPALIVES["keepalives_idle"]
            assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == KEEPALIVES["keepalives_interval"]
            assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == KEEPALIVES["keepalives_count"]
            assert sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == KEEPALIVES["tcp_user_timeout"]
        finally:
            sock.detach()  # the fd stays libpq's
        # A dead peer is noticed within about a minute, whether idle or with data in flight.
        idle = KEEPALIVES["keepalives_idle"]
        probes = KEEPALIVES["keepalives_interval"] * KEEPALIVES["keepalives_count"]
        assert idle + probes <= 60
        assert KEEPALIVES["tcp_user_timeout"] <= 60_000
    finally:
        writer.close()
