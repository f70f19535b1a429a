"""journey-stream: the runtime around the dataflow (CLI, Kafka I/O, broker, simulator)."""

__version__ = "0.1.0"
