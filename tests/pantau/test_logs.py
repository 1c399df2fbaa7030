import json
import logging

import pytest

from pantau import logs


@pytest.fixture(autouse=True)
def _restore_root_logger():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_level_logger_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("ingest.writer").info("wrote %d readings", 1000)
    logging.getLogger("ingest.writer").debug("not shown below INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "INFO"
    assert record["logger"] == "ingest.writer"
    assert record["message"] == "wrote 1000 readings"
    assert record["time"].endswith("+00:00")


def test_text_format_and_level(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("WARNING", "text")
    logging.getLogger("pantau.x").info("quiet")
    logging.getLogger("pantau.x").warning("loud")
    err = capsys.readouterr().err
    assert "quiet" not in err
    assert "WARNING pantau.x: loud" in err
