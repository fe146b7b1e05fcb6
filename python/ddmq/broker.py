"""The broker class: a ddmq root directory and the queues in it, with 0.9.10's API.

The names, arguments, defaults and return values are those of ddmq 0.9.10's ``ddmq.broker``;
the work is done by the Rust engine (``ddmq._ddmq``), which fixes the original's bugs the way
the ``ddmq`` command does: delivery in numeric order, priority 0 kept, ack deletes, nack
follows the message's requeue flag and limit, settings read fresh, no prints.

>>> import ddmq
>>> b = ddmq.broker('/tmp/ddmq', create=True)
>>> msg = b.publish('queue_name', 'Hello World!')
>>> msg = b.consume('queue_name')
>>> msg.message
'Hello World!'
>>> b.ack(msg)       # doctest: +ELLIPSIS
[...]

Additions: ``consume(queue, wait=SECONDS)`` waits for a message; ``messages(queue, wait=...)``
iterates for workers, acking each message whose loop body finished; ``msg.ack()``,
``msg.nack()``, ``msg.extend()``.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from . import _ddmq
from .errors import DdmqError, InvalidNameError, QueueExistsError, MessageNotFoundError
from .message import message, _from_record

log = logging.getLogger("ddmq")

version = _ddmq.VERSION

# The brokers alive in this process, to be reopened in a forked child (see _reopen_after_fork).
_live_brokers: "weakref.WeakSet[broker]" = weakref.WeakSet()

_ORIGINAL_DEFAULTS = {
    "message_timeout": 600,
    "cleaned": 0,
    "priority": 999,
    "requeue": True,
    "requeue_prio": 0,
}


class broker:
    """A ddmq root directory: publish to, consume from and manage its queues."""

    def __init__(self, root, create=False, verbose=False, debug=False):
        """Open a broker on a root directory.

        Args:
            root:    path to the root directory where the queues are located
            create:  if True, the root (and queues, on first use) are created when missing
            verbose: log at INFO level to stderr (logging.basicConfig, as 0.9.10)
            debug:   log at DEBUG level to stderr

        Raises:
            RootMissingError (error "missing") or RootUninitiatedError (error "uninitiated")
            when the root is not usable and create is False.
        """
        if verbose:
            logging.basicConfig(format="%(levelname)s:\t%(message)s", level=logging.INFO)
        if debug:
            logging.basicConfig(format="%(levelname)s:\t%(message)s", level=logging.DEBUG)
        self.root = root
        self.create = create
        self.default_settings = dict(_ORIGINAL_DEFAULTS)
        self.queue_settings: Dict[str, Dict[str, Any]] = {}
        self._native = _ddmq.Native(os.fspath(root), bool(create))
        _live_brokers.add(self)

    @property
    def global_settings(self) -> Dict[str, Any]:
        """The defaults updated with the root's ddmq.yaml, read now."""
        settings = dict(self.default_settings)
        settings.update(self._native.config_file(""))
        return settings

    def __repr__(self) -> str:
        """The broker's settings as ``key = value`` lines (as 0.9.10 prints them)."""
        fields = {
            "create": self.create,
            "default_settings": self.default_settings,
            "global_settings": self.global_settings,
            "queue_settings": self.queue_settings,
            "root": self.root,
        }
        return os.linesep.join("{} = {}".format(k, v) for k, v in sorted(fields.items()))

    # ------------------------------------------------------------------ settings

    def get_config_file(self, queue=""):
        """The settings written in the config file of a queue, or of the root with queue ''."""
        return self._native.config_file(queue)

    def get_settings(self, queue):
        """The effective settings of a queue: defaults, then the root's ddmq.yaml, then the
        queue's (read fresh; 0.9.10 cached them for the broker's lifetime)."""
        settings = self._native.settings(queue)
        self.queue_settings[queue] = settings
        return settings

    def update_settings_file(self, queue="", package={}):  # noqa: B006 (0.9.10's signature)
        """Update settings in the config file of a queue, or of the root with queue ''.

        Args:
            queue:   a queue name, or '' for the root
            package: a dict of the keys to change

        The values are checked before anything is written; the file is replaced atomically.
        """
        self._native.update_settings_file(queue, dict(package))

    # ------------------------------------------------------------------ cleaning

    def clean(self, queue, force=False):
        """Requeue or drop the queue's expired messages. Unless force, at most once a minute
        per queue (judged by `cleaned` in its ddmq.yaml); True if it cleaned."""
        return self._native.clean(queue, bool(force))

    def clean_all(self):
        """Clean every queue of the root (each at most once a minute)."""
        for queue in self._native.list_queues():
            self._native.clean(queue, False)

    # ------------------------------------------------------------------ queues

    def list_queues(self):
        """The names of the queues in the root, sorted."""
        return self._native.list_queues()

    def get_message_list(self, queue):
        """(names of the waiting messages in delivery order, names of the consumed ones)."""
        return self._native.message_list(queue)

    def delete_queue(self, queue):
        """Delete a queue and its messages. Refuses, before deleting anything, when the queue's
        directory holds files ddmq did not create (ForeignFilesError). Returns True."""
        self._native.delete_queue(queue)
        self.queue_settings.pop(queue, None)
        return True

    def create_queue(self, queue):
        """Create a queue. Returns True; QueueExistsError (a FileExistsError) if it exists."""
        if not self._native.create_queue(queue):
            path = os.path.join(os.fspath(self.root), queue)
            raise QueueExistsError("queue exists already: {}".format(path), "exists", path)
        return True

    def purge_queue(self, queue):
        """Delete every message of a queue, waiting and consumed; keep the queue.
        Returns (waiting messages deleted, consumed messages deleted)."""
        return self._native.purge_queue(queue)

    # ------------------------------------------------------------------ single messages

    def _locate(self, path) -> Tuple[str, str]:
        """(queue, file name) of a message object or of a path to a message file in this root."""
        if isinstance(path, message):
            return path.queue, path.filename
        path = os.fspath(path)
        directory, name = os.path.split(path)
        if os.path.basename(directory) == "work":
            directory = os.path.dirname(directory)
        parent, queue = os.path.split(directory)
        if not queue or not os.path.samefile(parent or ".", self.root):
            raise InvalidNameError(
                "{} is not a message file of a queue in {}".format(path, os.fspath(self.root)),
                "invalid_message_name", path)
        return queue, name

    def delete_message(self, path):
        """Delete a message, waiting or consumed, given the path to its file or the message
        object. Returns True; MessageNotFoundError (a FileNotFoundError) if it is gone."""
        queue, name = self._locate(path)
        if not self._native.delete_message(queue, name):
            raise MessageNotFoundError("message not found: {}".format(name), "message_not_found")
        if isinstance(path, message):
            path._ddmq_settled = True
        return True

    def get_message(self, path):
        """The message in the file at path."""
        return _from_record(_ddmq.Native.read_message(os.fspath(path)), self)

    def requeue_message(self, path, msg=None):
        """Requeue a consumed message (path to its work/ file, or the message object): it is
        published again at the queue's requeue_prio (or its own requeue priority) and its
        requeue_counter counts up. Returns True; MessageNotFoundError if it is gone."""
        queue, name = self._locate(msg if isinstance(msg, message) else path)
        if not self._native.requeue_message(queue, name):
            raise MessageNotFoundError("message not found: {}".format(name), "message_not_found")
        return True

    # ------------------------------------------------------------------ utilities

    def check_dir(self, path, only_conf=False):
        """True if path holds a ddmq.yaml (and, unless only_conf, a work/ directory); else None."""
        if os.path.isfile(os.path.join(path, "ddmq.yaml")):
            if only_conf or os.path.isdir(os.path.join(path, "work")):
                return True
        return None

    def get_queue_number(self, queue):
        """A new queue number: the time in microseconds, increasing within this process (0.9.10
        scanned the queue for max+1, which collided between publishers)."""
        return _ddmq.Native.next_queue_number()

    def create_folder(self, path):
        """Create a folder (and its parents) at path."""
        os.makedirs(path)

    def version(self):
        """The package version."""
        return version

    # ------------------------------------------------------------------ the queue itself

    def publish(self, queue, msg_text=None, priority=None, clean=True, requeue=False,
                requeue_prio=None, timeout=None, requeue_counter=0, requeue_limit=None):
        """Publish a message to a queue.

        Args:
            queue:           name of the queue (created first if the broker has create=True)
            msg_text:        the message: a str, or any JSON value (None is stored as '')
            priority:        lower is more urgent, 0 the most urgent (None: the queue's default)
            clean:           first requeue or drop expired messages (at most once a minute)
            requeue:         False: the message is dropped on nack or expiry; True: requeued at
                             the queue's requeue_prio; an int N: requeued at priority N
            requeue_prio:    if set, requeue at this priority (implies requeue)
            timeout:         seconds the message may stay consumed before it expires (None: the
                             queue's message_timeout)
            requeue_counter: the requeue count to start from
            requeue_limit:   requeues allowed on nack or expiry (None: unlimited)

        Returns:
            the message published (filename is its file name in the queue)
        """
        if msg_text is None:
            msg_text = ""
        if priority is not None and priority < 0:
            raise ValueError(
                "Warning, priority set to less than 0 (priority={}). Negative numbers will be "
                "sorted in the wrong order when working with messages.".format(priority))
        if requeue_prio is not None:
            if requeue_prio < 0:
                raise ValueError("requeue_prio must not be negative (requeue_prio={})"
                                 .format(requeue_prio))
            # An integer 0 in the file means "do not requeue"; True means the queue's
            # requeue_prio, which is 0 unless set otherwise.
            requeue = requeue_prio if requeue_prio else True
        record = self._native.publish(queue, msg_text, priority, timeout or None, requeue,
                                      requeue_limit or None, requeue_counter or 0, clean)
        return _from_record(record, self)

    def consume(self, queue, n=1, clean=True, wait=None):
        """Consume one message (or n) from a queue: it moves to the queue's work/ directory
        until it is acked, nacked or expires.

        Args:
            queue: name of the queue (created first if the broker has create=True)
            n:     how many messages to consume
            clean: first requeue or drop expired messages (at most once a minute)
            wait:  addition: seconds to wait for a message when the queue is empty (None: do
                   not wait). The GIL is released while waiting; Ctrl-C ends the wait.

        Returns:
            None if the queue was empty; a message if n == 1; otherwise a list of messages.
        """
        if not n:
            n = 1
        if n < 0:
            raise ValueError("n must be a positive number of messages (n={})".format(n))
        records = self._native.consume(queue, n, clean, wait)
        if not records:
            return None
        if n == 1:
            return _from_record(records[0], self)
        return [_from_record(r, self) for r in records]

    @staticmethod
    def _names(queue, msg_files) -> Tuple[str, List[str], Optional[message]]:
        msg = None
        if isinstance(queue, message):
            msg = queue
            queue, msg_files = msg.queue, msg.filename
        if not msg_files:
            raise ValueError("Message files list is empty.")
        if not isinstance(msg_files, list):
            msg_files = [msg_files]
        return queue, msg_files, msg

    def ack(self, queue, msg_files=None, requeue=None, clean=True):
        """Positive acknowledgement: delete consumed message(s).

        Args:
            queue:     name of the queue, or the message object to ack
            msg_files: a work/ file name (or message id), or a list of them
            requeue:   True requeues the message(s) instead of deleting them
            clean:     accepted for compatibility; ack does not clean

        Returns:
            the names acked (those no longer in flight are left out)
        """
        if type(queue) is message and msg_files is None:
            # The common case, ack(msg), without the general path's checks.
            done = self._native.ack(queue.queue, [queue.filename], bool(requeue))
            queue._ddmq_settled = True
            return done
        return self._settle("ack", queue, msg_files, bool(requeue))

    def nack(self, queue, msg_files=None, requeue=None, clean=True):
        """Negative acknowledgement of consumed message(s).

        Args:
            queue:     name of the queue, or the message object to nack
            msg_files: a work/ file name (or message id), or a list of them
            requeue:   None: requeue or drop as each message's requeue field says (within its
                       requeue_limit); True: requeue; False: delete
            clean:     accepted for compatibility; nack does not clean

        Returns:
            the names nacked (those no longer in flight are left out)
        """
        return self._settle("nack", queue, msg_files, None if requeue is None else bool(requeue))

    def _settle(self, verb, queue, msg_files, requeue):
        """ack and nack: requeue None follows each message, True requeues, False deletes."""
        queue, names, msg = self._names(queue, msg_files)
        done = self._native.nack(queue, names, requeue)
        if msg is not None:
            msg._ddmq_settled = True
        if len(done) < len(names):
            log.info("%s: %d of %d messages were no longer in flight in %s",
                     verb, len(names) - len(done), len(names), queue)
        return done

    def messages(self, queue, wait=None, clean=True) -> "MessageIterator":
        """Addition: iterate over a queue's messages, for workers::

            for msg in b.messages('tasks', wait=10):
                handle(msg.message)

        Each message is acked when the loop body finishes with it (when the next one is
        asked for), unless the body settled it itself (msg.ack(), msg.nack()). If the body
        raises, or the loop is left with break, the message in hand is given back to the
        queue at its old place, unacked. The iteration ends when the queue stays empty for
        wait seconds (None: as soon as it is empty).
        """
        return MessageIterator(self, queue, wait, clean)


class MessageIterator(Iterator[message]):
    """The iterator of broker.messages (also a context manager that gives back the message in
    hand on exit)."""

    def __init__(self, owner: broker, queue: str, wait: Optional[float], clean: bool) -> None:
        self._broker = owner
        self._queue = queue
        self._wait = wait
        self._clean = clean
        self._current: Optional[message] = None
        self._done = False

    def __iter__(self) -> "MessageIterator":
        return self

    def __next__(self) -> message:
        current, self._current = self._current, None
        if current is not None and not current._ddmq_settled:
            current.ack()  # the loop body finished with it
        if self._done:
            raise StopIteration
        msg = self._broker.consume(self._queue, clean=self._clean, wait=self._wait)
        if msg is None:
            self._done = True
            raise StopIteration
        self._current = msg
        return msg

    def close(self) -> None:
        """End the iteration; the message in hand, if not settled, goes back to the queue."""
        self._done = True
        current, self._current = self._current, None
        if current is not None and not current._ddmq_settled:
            current._give_back()

    def __enter__(self) -> "MessageIterator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # Reached at once when a loop over this iterator is left by an exception or break.
        try:
            self.close()
        except Exception:  # noqa: BLE001 (nowhere to report it from a finalizer)
            pass


def _reopen_after_fork() -> None:
    """In a forked child, give every broker a fresh engine handle: the parent's may hold locks
    that another parent thread had taken at the moment of the fork, and would never release
    here."""
    for b in list(_live_brokers):
        try:
            b._native = _ddmq.Native(os.fspath(b.root), bool(b.create))
        except DdmqError:
            pass  # the root is gone; the next call reports it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)
