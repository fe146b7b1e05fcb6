"""The API against the original 0.9.10's: every public function takes the original's arguments
with the original's defaults, and the same calls give results of the same shape."""

import inspect
import json
import subprocess
import sys

import ddmq
from conftest import run_original

SIGNATURES = r'''
import inspect, json, ddmq
out = {}
for cls in (ddmq.broker, ddmq.message):
    for name, fn in inspect.getmembers(cls, callable):
        if name.startswith("_") and name != "__init__":
            continue
        out[cls.__name__ + "." + name] = [
            [p.name, repr(p.default) if p.default is not p.empty else None, str(p.kind)]
            for p in inspect.signature(fn).parameters.values()]
print(json.dumps(out))
'''

# The same calls for both packages; each result is described by its shape. Bugs of 0.9.10 that
# would make a call fail are avoided (get_settings before clean: B12).
SHAPES = r'''
import json, sys, ddmq
root = sys.argv[1]
def shape(x):
    if isinstance(x, (list, tuple)):
        return [type(x).__name__] + [shape(i) for i in x]
    if isinstance(x, dict):
        return ["dict", sorted(x)]
    return type(x).__name__
out = []
def rec(name, x):
    out.append([name, shape(x)])
    return x
b = ddmq.broker(root, create=True)
rec("create_queue", b.create_queue("q"))
rec("list_queues", b.list_queues())
m = rec("publish", b.publish("q", "one"))
rec("publish.attrs", sorted(vars(m)))
rec("publish.msg2json", sorted(json.loads(m.msg2json())))
b.publish("q", "two", priority=5)
b.publish("q", "two-b", requeue_prio=3)
b.publish("q", "three", clean=False, timeout=30, requeue_limit=2)
rec("get_message_list", b.get_message_list("q"))
rec("get_settings", {k: v for k, v in b.get_settings("q").items() if k in b.default_settings})
c = rec("consume", b.consume("q"))
rec("ack", b.ack(c))
c = b.consume("q", clean=False)
rec("nack", b.nack(c, requeue=True))
rec("consume.n3", b.consume("q", n=3))
rec("consume.n2.empty.then", b.consume("q", n=2))
rec("consume.empty", b.consume("q"))
b.publish("q", "four")
c = b.consume("q")
rec("ack.names", b.ack("q", [c.filename]))
b.publish("q", "five")
c = b.consume("q")
rec("nack.names", b.nack("q", c.filename, requeue=False))
b.publish("q", "six")
c = b.consume("q")
import os
path = os.path.join(root, "q", "work", c.filename)
rec("get_message", b.get_message(path))
rec("requeue_message", b.requeue_message(path))
rec("purge_queue", b.purge_queue("q"))
b.publish("q", "seven")
waiting = b.get_message_list("q")[0][0]
rec("delete_message", b.delete_message(os.path.join(root, "q", waiting)))
rec("clean", b.clean("q", force=True))
rec("clean_all", b.clean_all())
rec("update_settings_file", b.update_settings_file("q", {"message_timeout": 60}))
rec("get_config_file", sorted(b.get_config_file("q")) and "dict")
rec("check_dir", b.check_dir(os.path.join(root, "q")))
rec("version", b.version())
rec("json2msg", ddmq.message.json2msg('{"message": "x", "queue": "q"}'))
rec("update", m.update({"priority": 3}))
rec("delete_queue", b.delete_queue("q"))
rec("list_queues.after", b.list_queues())
print(json.dumps(out))
'''


def ours(code, *args):
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_function_takes_the_original_arguments(original_python):
    original = json.loads(run_original(original_python, SIGNATURES))
    mine = json.loads(ours(SIGNATURES))
    for name, params in original.items():
        assert name in mine, "missing: " + name
        # Same parameters, names, defaults and kinds, in order; additions only after them.
        assert mine[name][:len(params)] == params, name
        for extra in mine[name][len(params):]:
            assert extra[1] is not None, "{}: added parameter {} needs a default".format(
                name, extra[0])


def test_results_have_the_original_shapes(original_python, tmp_path):
    original = json.loads(run_original(original_python, SHAPES, str(tmp_path / "orig")))
    mine = json.loads(ours(SHAPES, str(tmp_path / "ours")))
    assert [n for n, _ in mine] == [n for n, _ in original]
    for (name, want), (_, got) in zip(original, mine):
        assert got == want, name


def test_help_shows_the_api():
    text = inspect.getdoc(ddmq.broker.publish)
    assert "msg_text" in text and "priority" in text
    import pydoc
    page = pydoc.render_doc(ddmq.broker, renderer=pydoc.plaintext)
    for name in ("publish", "consume", "ack", "nack", "messages", "create_queue"):
        assert name in page
