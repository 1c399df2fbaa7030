"""What every `pantau` sub-command shares, wherever its domain defines it: the `--config` given
to the root command and the settings loaded from it."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from zoneinfo import ZoneInfo

from pantau import logs
from pantau.settings import Settings, load_settings

WIB = ZoneInfo("Asia/Jakarta")


class _State:
    config: Path | None = None


state = _State()


def actor() -> str:
    """Who acts, for the audit log, when a command changes something."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


def settings(configure_logs: bool = True) -> Settings:
    """The settings of this invocation; configures logging unless told not to."""
    loaded = load_settings(state.config)
    if configure_logs:
        logs.configure(loaded.log.level, loaded.log.format)
    return loaded
