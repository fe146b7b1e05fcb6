"""The message class: one message, as 0.9.10's ``ddmq.message`` represents it.

Its attributes are the fields of the message file (``message``, ``queue``, ``timeout``, ``id``,
``priority``, ``queue_number``, ``filename``, ``requeue``, ``requeue_counter``,
``requeue_limit``, and any extra keys), kept in ``__dict__`` as the original kept them, so
``msg2json`` and ``repr`` print what 0.9.10 printed.

Additions: a message returned by ``broker.consume`` knows its broker, so it can be settled by
itself: ``msg.ack()``, ``msg.nack()``, ``msg.extend()``.

>>> msg = message(queue='queue_name', message='Hello World!')
>>> msg.message
'Hello World!'
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Union

from .errors import DdmqError

log = logging.getLogger("ddmq")


class message:
    """One message: its body (``message``) and the fields ddmq stores with it."""

    # The broker that consumed the message lives in a slot, not in __dict__, so it never shows
    # in msg2json, repr or pickles.
    __slots__ = ("__dict__", "__weakref__", "_ddmq_broker", "_ddmq_settled")

    def __init__(self, queue=None, message=None, timeout=None, id=None, priority=None,
                 queue_number=None, filename=None, requeue=None, requeue_counter=None,
                 requeue_limit=None):
        """Initialize a message with the given parameters.

        Args:
            queue:           name of the queue the message belongs to
            message:         the message itself (any JSON value; usually a str)
            timeout:         seconds the message may stay consumed before it expires (None: the
                             queue's message_timeout)
            id:              the message's id (32 hex digits)
            priority:        lower is more urgent; 0 is the most urgent
            queue_number:    orders messages of the same priority (the publish time in µs)
            filename:        the message's file name (the work/ name once consumed)
            requeue:         False: dropped on nack or expiry; True: requeued at the queue's
                             requeue_prio; an int N: requeued at priority N
            requeue_counter: times the message has been requeued
            requeue_limit:   requeues allowed (None or 0: unlimited)
        """
        self.message = message
        self.queue = queue
        self.timeout = timeout
        self.id = id
        self.priority = priority
        self.queue_number = queue_number
        self.filename = filename
        self.requeue = requeue
        self.requeue_counter = requeue_counter
        self.requeue_limit = requeue_limit

    @classmethod
    def json2msg(cls, package: Union[str, Dict[str, Any]]) -> "message":
        """Convert a JSON object (a str, or a dict already decoded) to a message object."""
        if isinstance(package, str):
            package = json.loads(package)
        new_msg = cls()
        new_msg.__dict__.update(package)
        return new_msg

    def msg2json(self) -> str:
        """Convert a message object to a JSON object (str), as stored in a message file."""
        return json.dumps(self.__dict__)

    def update(self, package: Dict[str, Any]) -> None:
        """Update a message object with the parameters supplied by the package (dict)."""
        self.__dict__.update(package)

    def __repr__(self) -> str:
        """The attributes as ``key = value`` lines, sorted by key (as 0.9.10 prints them)."""
        text = ""
        for key, val in sorted(self.__dict__.items()):
            text += "{} = {}{}".format(key, val, os.linesep)
        return text.rstrip()

    def __getitem__(self, index: int) -> "message":
        """``msg[0]`` is the message itself. The original README's example prints
        ``b.consume(queue=...)[0].message``, though consume returns one message, not a list;
        0.9.10 raised TypeError there, this lets the example run."""
        if index in (0, -1):
            return self
        raise IndexError("a single message has only index 0")

    def __getstate__(self) -> Dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ additions

    def _owner(self):
        owner = getattr(self, "_ddmq_broker", None)
        if owner is None:
            raise DdmqError(
                "this message was not consumed through a broker in this process; "
                "use broker.ack(queue, filename) instead",
                "unbound",
            )
        return owner

    def ack(self) -> bool:
        """Acknowledge this consumed message: delete it. False if it was no longer in flight
        (expired and cleaned, or settled already)."""
        done = self._owner()._native.ack(self.queue, [self.filename], False)
        self._ddmq_settled = True
        return bool(done)

    def nack(self, requeue: Optional[bool] = None) -> bool:
        """Negatively acknowledge this consumed message: requeue it or drop it as its
        ``requeue`` field says (within ``requeue_limit``); ``requeue=True`` forces a requeue,
        ``requeue=False`` deletes it. False if it was no longer in flight."""
        done = self._owner()._native.nack(self.queue, [self.filename], requeue)
        self._ddmq_settled = True
        return bool(done)

    def extend(self) -> bool:
        """Extend the lease of this consumed message by its timeout from now (so it does not
        expire while still being worked on); ``filename`` follows the new work/ name. False if
        it was no longer in flight."""
        new_name = self._owner()._native.extend(self.queue, self.filename)
        if new_name is None:
            return False
        self.filename = new_name
        return True

    def _give_back(self) -> bool:
        """Put this consumed message back at its place in the queue, uncounted."""
        done = self._owner()._native.give_back(self.queue, self.filename)
        self._ddmq_settled = True
        return done


def _from_record(record: Dict[str, Any], owner) -> message:
    """A message object over a record from the native module, bound to its broker."""
    msg = _new(message)
    msg.__dict__ = record
    msg._ddmq_broker = owner
    msg._ddmq_settled = False
    return msg


_new = object.__new__
