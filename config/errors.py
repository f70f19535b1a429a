"""One root exception for the project, so callers can catch everything we raise on purpose.

The bottom of the import order: every layer may raise these, and this module imports
nothing of ours. Each error's message says what to do; the CLI prints it without a
traceback and exits with the error's code.
"""


class JourneyError(Exception):
    """Base of every error journey-stream raises deliberately; the CLI prints these without a traceback."""

    exit_code = 1


class ConfigError(JourneyError):
    """The journey map, settings or a recovery store do not fit; the message names the file and the key."""

    exit_code = 2


class BrokerError(JourneyError):
    """Kafka cannot be reached or lacks what the flow needs (topics, permissions)."""

    exit_code = 3


class DeliveryError(JourneyError):
    """An output message could not be delivered; the flow stops rather than lose it."""

    exit_code = 4


class ClusterError(JourneyError):
    """A process of the cluster lost its peers; every process must restart from the recovery store."""

    exit_code = 5
