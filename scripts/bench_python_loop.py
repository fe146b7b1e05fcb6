#!/usr/bin/env python3
"""The Python loop of scripts/bench's "python" part: N publishes, then consume and ack until the
queue is empty, through whatever `import ddmq` gives this interpreter (the original 0.9.10, or
the package built from python/). Prints one JSON line: {"publish": s, "consume": s, "count": n}
(wall time of the loops alone, interpreter start excluded).

  usage: bench_python_loop.py ROOT N SIZE
"""

import json
import sys
import time

import ddmq


def main():
    root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    text = "x" * size
    b = ddmq.broker(root, create=True)
    b.create_queue("tasks")
    t0 = time.perf_counter()
    for _ in range(n):
        b.publish("tasks", msg_text=text)
    t1 = time.perf_counter()
    count = 0
    while True:
        msg = b.consume("tasks")
        if msg is None:
            break
        b.ack(msg)
        count += 1
    t2 = time.perf_counter()
    print(json.dumps({"publish": t1 - t0, "consume": t2 - t1, "count": count}))


if __name__ == "__main__":
    main()
