"""Live latency against the floor of a pass-through loop on the same broker: ``python -m benchmarks.latency``.

The pieces run as separate processes, as they would in production: the broker, an
open-loop driver (``driver``) that sends pre-encoded events at a fixed rate, the system
under test (``journey run``, the pass-through loop of ``floor``, or with ``--runtime``
the runtime floor of ``runtime``: our source and sink, no work between), and this
orchestrator (``__main__``), which reads what came out and matches it to what was sent.
"""
