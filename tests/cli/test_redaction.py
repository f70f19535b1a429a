"""Registered secret values never reach a log line, an error message or a traceback."""

import logging
import subprocess
import sys

from tests.broker_fixtures import ROOT

PROGRAM = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from journey.redaction import keep_secret, redact
keep_secret(["s3cr3t-value", "ab"])
log = logging.getLogger("x")
log.info("connecting with %s", "s3cr3t-value")
try:
    raise ValueError("bad password s3cr3t-value")
except ValueError:
    log.exception("failed")
print(redact("error: s3cr3t-value; ab"))
raise RuntimeError("uncaught s3cr3t-value")
"""


def test_logs_errors_and_tracebacks_are_masked() -> None:
    done = subprocess.run([sys.executable, "-P", "-c", PROGRAM], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "RuntimeError: uncaught ***" in done.stderr
    assert "connecting with ***" in done.stderr and "ValueError: bad password ***" in done.stderr
    assert "error: ***; ab" in done.stdout  # too short to mask: it would mask common words
    assert "s3cr3t-value" not in out


def test_nothing_is_masked_before_a_secret_is_registered(caplog) -> None:
    from journey.redaction import redact

    with caplog.at_level(logging.INFO):
        logging.getLogger("y").info("plain %s", "text")
    assert "plain text" in caplog.text and redact("plain text") == "plain text"
