"""One exception hierarchy for Pantau; third-party errors are converted where they enter."""


class PantauError(Exception):
    """Base of every error Pantau raises on purpose. Its message is shown to the user as is."""

    exit_code = 1


class ConfigError(PantauError):
    """A setting, CLI argument or config file is wrong; the message names the key and what was
    expected."""

    exit_code = 2


class DatabaseUnavailable(PantauError):
    """PostgreSQL cannot be reached or refused the connection."""

    exit_code = 2


class MigrationError(PantauError):
    """A migration failed or the recorded schema does not match the shipped migrations."""

    exit_code = 2


class MissingDependency(PantauError):
    """A system program Pantau needs is not installed; the message names the Debian package."""

    exit_code = 2


class EmbeddedStackError(PantauError):
    """The embedded PostgreSQL or Mosquitto of `pantau dev` failed to start or stop."""

    exit_code = 2
