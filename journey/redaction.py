"""Secret values kept out of every log line and error message, whatever put them there.

Secrets come only from the environment or mounted files (``[kafka.secrets]``) and the
code never logs them; librdkafka redacts its own. This is the second line: once a
command has loaded its settings, any log record or error text that contains a secret
value has it replaced by ``***`` before it is written.
"""

import logging
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType

MASK = "***"
_secrets: set[str] = set()


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):  # a secret inside another: the longer first
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def keep_secret(values: Iterable[str]) -> None:
    """Register secret values: logs, errors and tracebacks mask them from now on.

    Values under 4 characters are not masked: they would mask common words, and a
    secret that short protects nothing.
    """
    fresh = {v for v in values if len(v) >= 4} - _secrets
    if not fresh:
        return
    if not _secrets:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_Redacting())
        sys.excepthook = _redacted_traceback
        threading.excepthook = _redacted_thread_traceback
    _secrets.update(fresh)


def _redacted_traceback(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    """An uncaught exception's traceback, as Python prints it, secrets masked."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, err, tb))))


def _redacted_thread_traceback(args: threading.ExceptHookArgs) -> None:
    """An uncaught exception of a thread, as Python prints it, secrets masked."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(f"Exception in thread {name}:\n" + redact("".join(
        traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))))
