"""ddmq: Dead Drop Messaging Queue, a message queue with no server (each queue a directory,
each message a file), with the API of the original ddmq 0.9.10 on a Rust engine.

>>> import ddmq
>>> b = ddmq.broker('/tmp/ddmq', create=True)
>>> b.publish(queue='queue_name', msg_text='Hello World!')   # doctest: +SKIP
>>> msg = b.consume(queue='queue_name')
>>> print(msg.message)
Hello World!

See help(ddmq.broker) and help(ddmq.message).
"""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _error_names
from .broker import broker, MessageIterator, version as __version__
from .message import message

__all__ = ["broker", "message", "MessageIterator", "__version__"] + list(_error_names)
