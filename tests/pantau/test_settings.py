import subprocess
import sys
from pathlib import Path

import pytest

from pantau.errors import ConfigError
from pantau.settings import Settings, _known_env_names, load_settings, reference_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./pantau.toml
    for name in list(__import__("os").environ):
        if name.startswith("PANTAU_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.http.port == 8080
    assert settings.storage.backend == "auto"
    assert settings.log.level == "INFO"


def test_file_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "pantau.toml", '[http]\nport = 9000\nhost = "0.0.0.0"\n[log]\nlevel = "debug"\n'
    )
    assert load_settings().http.port == 9000
    monkeypatch.setenv("PANTAU_HTTP__PORT", "9100")
    settings = load_settings()
    assert settings.http.port == 9100
    assert settings.http.host == "0.0.0.0"  # the file still counts for keys the env leaves alone
    assert settings.log.level == "DEBUG"


def test_config_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = write(tmp_path / "other.toml", "[mqtt]\nport = 8883\n")
    monkeypatch.setenv("PANTAU_CONFIG", str(other))
    assert load_settings().mqtt.port == 8883


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[database]\npoolmax = 3\n")
    with pytest.raises(ConfigError, match=r"database\.poolmax: unknown setting \(in .*p\.toml\)"):
        load_settings(path)


def test_unknown_section_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[databse]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match=r"databse: unknown setting"):
        load_settings(path)


def test_wrong_type_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[database]\npool_max_size = 'ten'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "database.pool_max_size = 'ten'" in message
    assert "valid integer" in message


def test_out_of_range_and_choice_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_MQTT__PORT", "70000")
    monkeypatch.setenv("PANTAU_STORAGE__BACKEND", "influx")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "mqtt.port = '70000' (in environment PANTAU_MQTT__PORT)" in message
    assert "less than or equal to 65535" in message
    assert "storage.backend = 'influx'" in message
    assert "'auto', 'timescale' or 'plain'" in message


def test_unknown_env_var_suggests_the_close_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_DATABSE__URL", "postgresql:///x")
    with pytest.raises(ConfigError, match="did you mean PANTAU_DATABASE__URL"):
        load_settings()


def test_bad_database_url_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_DATABASE__URL", "host=localhost port")
    with pytest.raises(ConfigError, match=r"database\.url = .*expected a libpq connection string"):
        load_settings()


def test_secrets_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[mqtt]\npassword = 123456789\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "123456789" not in str(info.value)
    assert "mqtt.password = <hidden>" in str(info.value)


def test_redacted_hides_passwords() -> None:
    settings = Settings(
        database={"url": "postgresql://pantau:s3cret@db.example:5432/pantau"},
        mqtt={"password": "hunter2"},
    )
    text = repr(settings.redacted())
    assert "s3cret" not in text
    assert "hunter2" not in text
    assert settings.redacted()["database"]["url"].startswith("user=pantau password=********")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[http\nport = 1\n")
    with pytest.raises(ConfigError, match=r"p\.toml is not valid TOML"):
        load_settings(path)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_config_check_prints_effective_config(tmp_path: Path) -> None:
    write(tmp_path / "pantau.toml", '[mqtt]\npassword = "hunter2"\nport = 1884\n')
    result = _cli("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[mqtt]" in result.stdout
    assert "port = 1884" in result.stdout
    assert "hunter2" not in result.stdout
    assert 'password = "**********"' in result.stdout


def test_config_check_bad_value_exits_2_without_traceback(tmp_path: Path) -> None:
    result = _cli("config", "check", env={"PANTAU_HTTP__PORT": "eighty"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "http.port = 'eighty' (in environment PANTAU_HTTP__PORT)" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in _known_env_names() if name not in readme]
    assert not missing, f"README.md does not document: {missing}"
    assert reference_table() in readme, "README's settings table differs: paste the output of "
    "`pantau config reference`"
