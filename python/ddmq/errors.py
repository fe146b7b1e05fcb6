"""The exceptions of ddmq: one hierarchy under :class:`DdmqError`.

0.9.10 raised ``DdmqError(message, error)`` for a missing or uninitiated root, with ``error``
``"missing"`` or ``"uninitiated"``; every error here is a ``DdmqError`` with those two attributes,
plus ``path`` (the file or directory it is about, or None) and ``reason``. Where Python code
expects a built-in exception, the class derives from it as well: a missing queue is a
``FileNotFoundError``, an invalid name a ``ValueError``, a denied access a ``PermissionError``, so
``except FileNotFoundError`` around 0.9.10 calls keeps working.
"""

from __future__ import annotations

from typing import Optional


class DdmqError(Exception):
    """Base of every ddmq error.

    Attributes:
        message: the whole message (also ``str(error)``)
        error:   a short code, e.g. ``"missing"``, ``"uninitiated"``, ``"no_such_queue"``
        path:    the file or directory concerned, or None
        reason:  what went wrong, without the path
    """

    def __init__(self, message: str, error: Optional[str] = None, path: Optional[str] = None,
                 reason: Optional[str] = None) -> None:
        Exception.__init__(self, message, error)
        self.message = message
        self.error = error
        self.path = None if path is None else str(path)
        self.reason = message if reason is None else reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # Picklable across multiprocessing, whatever the OSError side did with the arguments.
        return (type(self), (self.message, self.error, self.path, self.reason))


class _OSSide(DdmqError):
    """Base of the classes that are also OSErrors: fills errno, strerror and filename the way
    they mean here (OSError's constructor would read the positional arguments as those)."""

    def __init__(self, message: str, error: Optional[str] = None, path: Optional[str] = None,
                 reason: Optional[str] = None) -> None:
        DdmqError.__init__(self, message, error, path, reason)
        self.errno = None
        self.strerror = self.reason
        self.filename = self.path


class RootMissingError(_OSSide, FileNotFoundError):
    """The root directory does not exist (``error == "missing"``)."""


class RootUninitiatedError(DdmqError):
    """The root directory exists but holds no ddmq.yaml (``error == "uninitiated"``)."""


class QueueNotFoundError(_OSSide, FileNotFoundError):
    """The queue does not exist (and the broker was not opened with ``create=True``)."""


class QueueExistsError(_OSSide, FileExistsError):
    """``create_queue`` of a queue that exists already."""


class NotAQueueError(DdmqError):
    """The queue's directory exists but is not a ddmq queue (no ddmq.yaml or work/)."""


class QueueNotEmptyError(_OSSide, OSError):
    """The queue still holds messages."""


class ForeignFilesError(_OSSide, OSError):
    """The queue holds files ddmq did not create; nothing was deleted."""


class InvalidNameError(DdmqError, ValueError):
    """A queue name or message file name that ddmq does not accept."""


class InvalidArgumentError(DdmqError, ValueError):
    """An argument out of range."""


class MessageNotFoundError(_OSSide, FileNotFoundError):
    """The message file is gone (acked, expired or taken by another client)."""


class ConfigError(DdmqError, ValueError):
    """A ddmq.yaml that does not parse or has a value of the wrong type."""


class MessageTooLargeError(DdmqError, ValueError):
    """A message body larger than the queue's ``max_message_bytes``."""


class CorruptMessageError(DdmqError, ValueError):
    """A message file that is not a ddmq message (JSON object)."""


class NotFoundError(_OSSide, FileNotFoundError):
    """A file or directory the operation needed is missing."""


class PermissionDeniedError(_OSSide, PermissionError):
    """The operating system refused access."""


class DdmqOSError(_OSSide, OSError):
    """Any other operating-system error."""


__all__ = [
    "DdmqError", "RootMissingError", "RootUninitiatedError", "QueueNotFoundError",
    "QueueExistsError", "NotAQueueError", "QueueNotEmptyError", "ForeignFilesError",
    "InvalidNameError", "InvalidArgumentError", "MessageNotFoundError", "ConfigError",
    "MessageTooLargeError", "CorruptMessageError", "NotFoundError", "PermissionDeniedError",
    "DdmqOSError",
]
