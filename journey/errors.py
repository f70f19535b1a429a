"""One root exception for the project, so callers can catch everything we raise on purpose."""


class JourneyError(Exception):
    """Base of every error journey-stream raises deliberately; the CLI prints these without a traceback."""

    exit_code = 1


class ConfigError(JourneyError):
    """The journey map or settings file is invalid; the message names the file and the key."""

    exit_code = 2


class BrokerError(JourneyError):
    """Kafka cannot be reached or lacks what the flow needs (topics, permissions)."""

    exit_code = 3


class DeliveryError(JourneyError):
    """An output message could not be delivered; the flow stops rather than lose it."""

    exit_code = 4
