"""URL redaction (properties over generated URLs and text) and the log filter that applies it to
every line Pantau writes, on captured output of both log formats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pantau import logs
from streams.urls import redact, redact_text

# Userinfo may hold anything but white space, also what FFmpeg and users do not encode
# (`Admin@123`, `pa:ss`, `a#b`, `x?y`, `a/b`).
SECRET_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Z", "C"), include_characters="@:/?#%&=;!$'\"()[]*"
)
secrets = st.text(SECRET_CHARS, min_size=1, max_size=30)
hosts = st.from_regex(r"\A[a-z0-9][a-z0-9.\-]{0,20}(:[0-9]{1,5})?\Z")
# Paths and queries without `@` (an `@` after the host hides the host too: tested apart) and
# without `=` (a credential parameter is redacted: tested apart).
paths = st.from_regex(r"\A(/[A-Za-z0-9._~\-]{0,12}){0,4}(\?[A-Za-z0-9&._\-]{0,20})?\Z")
schemes = st.sampled_from(["rtsp", "rtsps", "http", "https", "rtmp"])
words = st.text(st.characters(codec="utf-8", exclude_categories=("C",)), max_size=40)


@given(schemes, secrets, secrets, hosts, paths)
def test_user_and_password_are_masked_and_the_rest_kept(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    assert redact(url) == f"{scheme}://***@{host}{path}"


@given(schemes, secrets, hosts, paths)
def test_userinfo_without_password_is_masked(scheme: str, user: str, host: str, path: str) -> None:
    assert redact(f"{scheme}://{user}@{host}{path}") == f"{scheme}://***@{host}{path}"


@given(schemes, hosts, paths)
def test_url_without_credentials_is_unchanged(scheme: str, host: str, path: str) -> None:
    url = f"{scheme}://{host}{path}"
    assert redact(url) == url
    assert redact_text(f"open {url} failed") == f"open {url} failed"


VALUES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Z", "C"), exclude_characters="&;#@"),
    max_size=20,
)


@given(hosts, VALUES, VALUES)
def test_credentials_in_parameters_are_masked(host: str, user: str, password: str) -> None:
    query = f"rtsp://{host}/cam/realmonitor?channel=1&user={user}&password={password}&subtype=0"
    assert redact(query) == (
        f"rtsp://{host}/cam/realmonitor?channel=1&user=***&password=***&subtype=0"
    )
    # XMeye cameras put them in the path.
    in_path = f"rtsp://{host}/user={user}&password={password}&channel=1&stream=0.sdp"
    assert redact(in_path) == f"rtsp://{host}/user=***&password=***&channel=1&stream=0.sdp"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://user:pass@host:554/path?x", "rtsp://***@host:554/path?x"),
        ("rtsp://admin@10.0.0.2/live", "rtsp://***@10.0.0.2/live"),
        (
            "rtsp://admin:Admin@123@10.0.0.1:554/Streaming/101",
            "rtsp://***@10.0.0.1:554/Streaming/101",
        ),
        ("rtsp://u:p%40ss@h/a", "rtsp://***@h/a"),
        ("RTSP://U:P@H/A?Password=x&pwd=y", "RTSP://***@H/A?Password=***&pwd=***"),
        # An `@` after the host: the host is hidden with the password, never the reverse.
        ("rtsp://u:p@h/live?mail=a@b", "rtsp://***@b"),
        ("rtsp://***@h/a", "rtsp://***@h/a"),
        ("not a url", "not a url"),
    ],
)
def test_examples(url: str, shown: str) -> None:
    assert redact(url) == shown


@given(words, schemes, secrets, secrets, hosts, paths, words)
def test_every_url_in_text_is_redacted(
    before: str, scheme: str, user: str, password: str, host: str, path: str, after: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    text = f"{before} {url} {after}"
    redacted = redact_text(text)
    assert redacted == f"{redact_text(before)} {scheme}://***@{host}{path} {redact_text(after)}"
    assume(password not in before + after + host + path + "***@" + scheme + "://")
    assert password not in redacted


@given(words, secrets, secrets)
def test_a_url_glued_to_other_text_is_still_redacted(before: str, user: str, password: str) -> None:
    assume(password not in before + "rtsp://***@camera/live")
    text = f"{before}rtsp://{user}:{password}@camera/live"
    assert password not in redact_text(text)


@given(st.text(max_size=80))
def test_redaction_is_idempotent(text: str) -> None:
    assert redact(redact(text)) == redact(text)
    assert redact_text(redact_text(text)) == redact_text(text)


# --- the log filter, on captured output ------------------------------------------------------

SECRET_URL = "rtsp://pantau:rahasia-kamera@127.0.0.1:8554/secure"


@pytest.fixture
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_everything() -> None:
    log = logging.getLogger("streams.probe")
    log.warning("cannot open %s: %s", SECRET_URL, "401 Unauthorized")
    log.info("opened " + SECRET_URL)  # noqa: G003 - a careless caller is what this guards
    log.info("camera", extra={"url": SECRET_URL})
    try:
        raise ConnectionError(f"Server returned 401 Unauthorized: '{SECRET_URL}'")
    except ConnectionError:
        log.exception("probe of cam-1 failed")
    log.error("stack", stack_info=True, extra={"where": f"at {SECRET_URL}"})
    # Third-party loggers (PyAV's `libav.*`, uvicorn) reach the same handler.
    logging.getLogger("libav.rtsp").error("method DESCRIBE failed on %s", SECRET_URL)


@pytest.mark.usefixtures("_restore_root_logger")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_credentials_never_reach_the_log(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", fmt)  # type: ignore[arg-type]
    _log_everything()
    err = capsys.readouterr().err
    assert "rahasia-kamera" not in err
    assert "pantau:" not in err
    # message, concatenated message, exception, third party (+ the extras in JSON)
    assert err.count("rtsp://***@127.0.0.1:8554/secure") >= (4 if fmt == "text" else 6)
    assert "Traceback (most recent call last)" in err  # the exception is still shown
    assert "ConnectionError: Server returned 401 Unauthorized" in err
    if fmt == "json":
        lines = [json.loads(line) for line in err.strip().splitlines()]
        assert lines[0]["message"] == (
            "cannot open rtsp://***@127.0.0.1:8554/secure: 401 Unauthorized"
        )
        assert lines[2]["url"] == "rtsp://***@127.0.0.1:8554/secure"
        assert "ConnectionError" in lines[3]["exc_info"]


@pytest.mark.usefixtures("_restore_root_logger")
def test_bad_log_arguments_are_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text")
    logging.getLogger("x").info("%s %s", SECRET_URL)  # one argument missing
    err = capsys.readouterr().err
    assert "rahasia-kamera" not in err
    assert "bad log arguments" in err
