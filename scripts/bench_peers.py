#!/usr/bin/env python3
"""The Python contenders of scripts/bench, driven by benches/ddmq-bench (cargo bench).

Each call does one timed piece of work in this process and prints one JSON line:
{"seconds": <wall time of the work alone, interpreter start excluded>, "count": <messages>}.

  orig-publish ROOT QUEUE N SIZE defaults|noclean   the original ddmq 0.9.10 module
  orig-consume ROOT QUEUE N defaults|noclean        consume then ack, one message at a time
  dirq-publish DIR N SIZE / dirq-consume DIR N      python-dirq Queue (schema body: binary)
  dirqs-publish DIR N SIZE / dirqs-consume DIR N    python-dirq QueueSimple
  mount-publish MNT QUEUE N SIZE                    a client of `ddmq mount`: open/write/close MNT/QUEUE/in
  mount-consume MNT QUEUE N                         open/read/close MNT/QUEUE/next (close acks)

The original's module needs PYTHONWARNINGS=ignore (PyYAML 5.3.1 warns on every load).
"""

import errno
import json
import os
import sys
import time


def body(size):
    return "x" * size


def report(seconds, count):
    print(json.dumps({"seconds": seconds, "count": count}))


def original_broker(root):
    from ddmq.broker import broker

    return broker(root, create=True)


def orig_publish(root, queue, n, size, mode):
    b = original_broker(root)
    if not os.path.isdir(os.path.join(root, queue)):
        b.create_queue(queue)
    clean = mode == "defaults"
    text = body(size)
    t = time.perf_counter()
    for _ in range(n):
        if clean:
            b.publish(queue, text)
        else:
            b.publish(queue, text, clean=False)
    report(time.perf_counter() - t, n)


def orig_consume(root, queue, n, mode):
    b = original_broker(root)
    clean = mode == "defaults"
    done = 0
    t = time.perf_counter()
    for _ in range(n):
        m = b.consume(queue) if clean else b.consume(queue, clean=False)
        if m is None:
            break
        # ack by queue name and file name: ack(msg) would requeue a requeue=True message (B1)
        b.ack(queue, m.filename)
        done += 1
    report(time.perf_counter() - t, done)


def dirq_queue(path, simple):
    if simple:
        from dirq.QueueSimple import QueueSimple

        return QueueSimple(path)
    from dirq.queue import Queue

    return Queue(path, schema={"body": "binary"})


def dirq_publish(path, n, size, simple):
    q = dirq_queue(path, simple)
    data = body(size).encode()
    t = time.perf_counter()
    for _ in range(n):
        q.add(data if simple else {"body": data})
    report(time.perf_counter() - t, n)


def dirq_consume(path, n, simple):
    q = dirq_queue(path, simple)
    done = 0
    t = time.perf_counter()
    while done < n:
        progressed = False
        for name in q:  # one listing per pass, as the module is meant to be used
            if done >= n:
                break
            if not q.lock(name):
                continue
            q.get(name)
            q.remove(name)
            done += 1
            progressed = True
        if not progressed:
            break
    report(time.perf_counter() - t, done)


def mount_publish_n(mnt, queue, n, size):
    data = body(size).encode()
    path = os.path.join(mnt, queue, "in")
    for _ in range(n):
        with open(path, "wb") as f:
            f.write(data)


def mount_consume_n(mnt, queue, n):
    path = os.path.join(mnt, queue, "next")
    done = 0
    while done < n:
        try:
            f = open(path, "rb")
        except OSError as e:
            if e.errno == errno.ENODATA:
                break
            raise
        with f:
            f.read()
        done += 1
    return done


def mount_publish(mnt, queue, n, size):
    t = time.perf_counter()
    mount_publish_n(mnt, queue, n, size)
    report(time.perf_counter() - t, n)


def mount_consume(mnt, queue, n):
    t = time.perf_counter()
    done = mount_consume_n(mnt, queue, n)
    report(time.perf_counter() - t, done)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, a = argv[1], argv[2:]
    try:
        if cmd == "orig-publish":
            orig_publish(a[0], a[1], int(a[2]), int(a[3]), a[4])
        elif cmd == "orig-consume":
            orig_consume(a[0], a[1], int(a[2]), a[3])
        elif cmd in ("dirq-publish", "dirqs-publish"):
            dirq_publish(a[0], int(a[1]), int(a[2]), cmd.startswith("dirqs"))
        elif cmd in ("dirq-consume", "dirqs-consume"):
            dirq_consume(a[0], int(a[1]), cmd.startswith("dirqs"))
        elif cmd == "mount-publish":
            mount_publish(a[0], a[1], int(a[2]), int(a[3]))
        elif cmd == "mount-consume":
            mount_consume(a[0], a[1], int(a[2]))
        else:
            sys.exit(f"bench_peers.py: unknown command {cmd!r}\n{__doc__}")
    except (IndexError, ValueError) as e:
        sys.exit(f"bench_peers.py {cmd}: bad arguments ({e})\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
