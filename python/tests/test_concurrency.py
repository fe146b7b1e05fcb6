"""Several processes and threads on one queue."""

import multiprocessing
import os
import threading
import time

import ddmq

MESSAGES = 800


def drain(b, queue, results, parent_handle=None):
    """Consume and ack until the queue stays empty; send what was consumed."""
    if parent_handle is not None:
        # A forked child must not use the parent's engine handle (its locks may be held by a
        # parent thread that does not exist here).
        assert id(b._native) != parent_handle
    got = []
    while True:
        msg = b.consume(queue, wait=0.3)
        if msg is None:
            break
        got.append(msg.message)
        assert msg.ack()
    results.put(got)


def test_four_processes_consume_every_message_exactly_once(root):
    b = ddmq.broker(root, create=True)
    for i in range(MESSAGES):
        b.publish("work", str(i))
    # Fork with the parent's broker in use by another thread (a consume waiting on another
    # queue): each child must get an engine handle of its own, not the parent's locks.
    waiter = threading.Thread(target=b.consume, args=("idle",), kwargs={"wait": 2})
    waiter.start()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=drain, args=(b, "work", results, id(b._native)))
               for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    collected = [results.get(timeout=10) for _ in workers]
    waiter.join()
    delivered = [m for got in collected for m in got]
    assert sorted(delivered, key=int) == [str(i) for i in range(MESSAGES)]
    assert b.get_message_list("work") == ([], [])


def test_spawned_processes_open_their_own_broker(root):
    b = ddmq.broker(root, create=True)
    for i in range(40):
        b.publish("work", str(i))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    workers = [ctx.Process(target=spawned_drain, args=(root, results)) for _ in range(2)]
    for w in workers:
        w.start()
    delivered = [m for _ in workers for m in results.get(timeout=120)]
    for w in workers:
        w.join(timeout=60)
    assert sorted(delivered, key=int) == [str(i) for i in range(40)]


def spawned_drain(root, results):
    drain(ddmq.broker(root), "work", results)


def test_waiting_consume_does_not_block_publishing_in_another_thread(root):
    b = ddmq.broker(root, create=True)
    b.create_queue("q")
    got = []
    started = threading.Event()

    def consumer():
        started.set()
        got.append(b.consume("q", wait=30))

    t = threading.Thread(target=consumer)
    t.start()
    started.wait()
    time.sleep(0.2)  # let it start waiting
    # If the wait held the GIL, this publish would only run after the 30 s wait ended empty.
    published = b.publish("q", "wake up")
    t.join(timeout=60)
    assert not t.is_alive()
    assert got and got[0] is not None and got[0].id == published.id


def test_threads_share_one_broker(root):
    b = ddmq.broker(root, create=True)
    for i in range(400):
        b.publish("q", str(i))
    seen = []
    lock = threading.Lock()

    def worker():
        while True:
            msg = b.consume("q")
            if msg is None:
                return
            with lock:
                seen.append(msg.message)
            msg.ack()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen, key=int) == [str(i) for i in range(400)]
    assert os.listdir(os.path.join(root, "q", "work")) == []


def test_ctrl_c_ends_a_wait(root):
    import signal
    import subprocess
    import sys
    code = (
        "import signal, sys, ddmq\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "b = ddmq.broker(sys.argv[1], create=True)\n"
        "b.create_queue('q')\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    b.consume('q', wait=120)\n"
        "    print('returned')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "waiting\n"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert out == "interrupted\n"
