"""Redaction of credentials in URLs: what a camera URL may show in a log, a listing or an error.

`rtsp://user:pass@host:554/path?x` becomes `rtsp://***@host:554/path?x`; credentials passed as
parameters (`?user=admin&password=...`, or XMeye's `/user=admin&password=...&channel=1`) become
`password=***`. Camera passwords often hold `@`, `#` or `?` unencoded (`Admin@123`), and FFmpeg
takes the *last* `@` of the authority as the end of the userinfo, so everything up to the last
`@` of the URL is redacted: when a path or a query holds an `@` too, the host is hidden with the
password -- we prefer hiding a host to showing a password. In free text a URL ends at white
space, so a password holding a space is the one case not caught (it cannot be in a valid URL).
"""

from __future__ import annotations

import re

MASK = "***"

# In text, whatever follows `://` up to white space, whatever the scheme (or none: a scheme
# glued to a word or a digit must not hide a URL). Quotes and brackets stay in the token: a
# password may hold them, and a trailing one after the host is harmless.
_URL = re.compile(r"(://)(\S*)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# Parameters that carry credentials, wherever they sit after the host (query or path).
_SECRET_PARAM = re.compile(
    r"(?i)(?<=[?&;/])"
    r"(user|username|usr|login|password|passwd|pass|pwd|pw|token|access_token|auth|"
    r"authorization|secret|key|apikey|api_key|sig|signature|credentials?)"
    r"=[^&;#\s]*"
)


def redact(url: str) -> str:
    """The URL with its userinfo and credential parameters masked; anything else unchanged."""
    match = _SCHEME.match(url)
    if match is None:
        return _redact_params(url)
    scheme = match.group(0)
    return scheme + _redact_rest(url[len(scheme) :])


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (log lines, exception messages, FFmpeg output)."""
    if "://" not in text:  # the common case: nothing to look at
        return text
    return _URL.sub(lambda m: m.group(1) + _redact_rest(m.group(2)), text)


def _redact_rest(rest: str) -> str:
    """What follows `scheme://`: userinfo up to the last `@`, then credential parameters."""
    at = rest.rfind("@")
    if at >= 0:
        return f"{MASK}@" + _redact_params(rest[at + 1 :])
    return _redact_params(rest)


def _redact_params(text: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
