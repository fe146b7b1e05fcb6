"""One directory shared by this module, the ddmq command (the Rust CLI installed with it) and
the original 0.9.10 package: what each publishes, the others consume."""

import json
import subprocess

import ddmq
from conftest import run_original

ORIGINAL_PUBLISH = r'''
import sys, ddmq
b = ddmq.broker(sys.argv[1], create=True)
for text in sys.argv[2:]:
    b.publish("shared", msg_text=text)
'''

ORIGINAL_DRAIN = r'''
import sys, json, ddmq
b = ddmq.broker(sys.argv[1])
got = []
while True:
    msg = b.consume("shared")
    if msg is None:
        break
    got.append(msg.message)
    b.ack("shared", msg.filename)
print(json.dumps(got))
'''


def cli(command, *args):
    done = subprocess.run([command, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_module_to_cli_and_original(root, original_python, ddmq_command):
    b = ddmq.broker(root, create=True)
    texts = ["m{}".format(i) for i in range(12)] + ["h\u00e9 \U0001F600"]
    for t in texts:
        b.publish("shared", t)
    out = cli(ddmq_command, "consume", "-n", "5", "--format", "json", "--ack", root, "shared")
    by_cli = [json.loads(line)["message"] for line in out.splitlines()]
    assert by_cli == texts[:5]
    by_original = json.loads(run_original(original_python, ORIGINAL_DRAIN, root))
    # The original sorts names as strings; the set is what matters here.
    assert sorted(by_original) == sorted(texts[5:])
    assert b.get_message_list("shared") == ([], [])


def test_original_and_cli_to_module(root, original_python, ddmq_command):
    texts = ["o{}".format(i) for i in range(12)]
    run_original(original_python, ORIGINAL_PUBLISH, root, *texts)
    cli(ddmq_command, "publish", "-s", root, "shared", "from the cli")
    b = ddmq.broker(root)
    got = []
    for msg in b.messages("shared"):
        got.append(msg.message)
    # Numeric order: o10 and o11 after o9 (0.9.10 itself would give o1, o10, o11, o2, ...).
    assert got == texts + ["from the cli"]
    assert b.get_message_list("shared") == ([], [])


def test_message_files_are_the_originals_format(root, original_python):
    b = ddmq.broker(root, create=True)
    m = b.publish("shared", {"k": [1, 2]}, priority=7, requeue=True, timeout=30)
    read_back = run_original(original_python, r'''
import sys, ddmq, os
b = ddmq.broker(sys.argv[1])
msg = b.consume("shared")
print(msg.msg2json())
''', root)
    theirs = json.loads(read_back)
    assert theirs["message"] == {"k": [1, 2]}
    assert theirs["id"] == m.id and theirs["priority"] == 7 and theirs["requeue"] is True
    assert theirs["timeout"] == 30
