"""The Python examples of the original 0.9.10 README (README.rst, "Python Module Usage" and
"Example: parallelization ..."), run as they are written; only the root directory /tmp/ddmq is
replaced by a private one, and the names the README leaves to the reader (file_names, run_task)
are defined."""

import os
import subprocess
import sys
import time

import ddmq

MODULE_USAGE = '''
# imports both the broker and message module
import ddmq

# create the broker object and specify the path to the root directory
# adding create=True to tell it to create and initiate both the root 
# directory and queue directories if they don't already exist
b = ddmq.broker('/tmp/ddmq', create=True)

# publish a message to the specified queue
b.publish(queue='queue_name', msg_text='Hello World!')

# consume a single message from the specified queue
msg = b.consume(queue='queue_name')

# print the message contained
print(msg[0].message)
'''

PROGRAM = '''
# init queue
import ddmq
b = ddmq.broker('/tmp/ddmq', create=True)
b.create_queue('tasks')

# go through the file names and submit to queue
for file in file_names:
    b.publish('tasks', msg_text=file)
'''

CONSUMER = '''
# init queue
import ddmq
import time
b = ddmq.broker('/tmp/ddmq', create=True)

while True:
    msg = b.consume('tasks')

    # wait 10s for messages if the queue is empty
    if not msg:
        time.sleep(10)
    else:
        # run the task and acknowledge the message
        run_task(msg.message)
        b.ack(msg)
'''


def run_example(code, root, prelude=""):
    code = prelude + code.replace("'/tmp/ddmq'", repr(root))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_module_usage_example(root):
    proc = run_example(MODULE_USAGE, root)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "Hello World!\n"
    waiting, consumed = ddmq.broker(root).get_message_list("queue_name")
    assert waiting == [] and len(consumed) == 1


def test_parallelization_example(root, tmp_path):
    files = ["file{}.txt".format(i) for i in range(25)]
    program = run_example(PROGRAM, root, "file_names = {!r}\n".format(files))
    _, err = program.communicate(timeout=60)
    assert program.returncode == 0, err

    done_log = tmp_path / "done.txt"
    run_task = (
        "def run_task(name):\n"
        "    with open({!r}, 'a') as f:\n"
        "        f.write(name + '\\n')\n"
    ).format(str(done_log))
    consumers = [run_example(CONSUMER, root, run_task) for _ in range(2)]
    b = ddmq.broker(root)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b.get_message_list("tasks") == ([], []) and done_log.exists() \
                    and len(done_log.read_text().split()) >= len(files):
                break
            time.sleep(0.05)
    finally:
        for c in consumers:
            c.kill()
            c.communicate()
    assert sorted(done_log.read_text().split()) == sorted(files)
    assert b.get_message_list("tasks") == ([], [])
