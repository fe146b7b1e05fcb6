"""The module's behaviour: the engine's, with 0.9.10's bugs fixed as the CLI fixes them, the
errors, and the additions (wait, messages(), msg.ack/nack/extend)."""

import errno
import os
import pickle
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

import ddmq


@pytest.fixture
def b(root):
    return ddmq.broker(root, create=True)


def drain(b, queue):
    out = []
    while True:
        msg = b.consume(queue)
        if msg is None:
            return out
        out.append(msg.message)
        b.ack(msg)


def test_errors_say_what_and_where(root):
    with pytest.raises(ddmq.RootMissingError) as e:
        ddmq.broker(root)
    assert e.value.error == "missing" and e.value.path == root
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ddmq.DdmqError)
    os.makedirs(root)
    with pytest.raises(ddmq.DdmqError) as e:
        ddmq.broker(root)
    assert e.value.error == "uninitiated" and root in str(e.value)
    ddmq.broker(root, create=True)
    b = ddmq.broker(root)
    with pytest.raises(FileNotFoundError) as e:
        b.publish("nope", "x")
    assert isinstance(e.value, ddmq.QueueNotFoundError)
    assert e.value.filename == os.path.join(root, "nope")
    with pytest.raises(ddmq.InvalidNameError):
        b.create_queue("../escape")
    b.create_queue("q")
    with pytest.raises(FileExistsError):
        b.create_queue("q")


def _permission_error_case(root):
    """What an unprivileged user sees publishing to a queue it may not write to; returns the
    exception raised, as text."""
    b = ddmq.broker(root, create=True)
    b.create_queue("q")
    os.chmod(os.path.join(root, "q"), 0o500)
    try:
        b.publish("q", "x")
    except PermissionError as e:
        assert isinstance(e, ddmq.PermissionDeniedError) and e.error == "io", repr(e)
        assert e.errno == errno.EACCES and str(e.filename).startswith(str(root)), repr(e)
        return "PermissionError"
    finally:
        os.chmod(os.path.join(root, "q"), 0o700)
    return "no error"


def test_permission_error_where_python_expects_one(root):
    if os.geteuid() != 0:
        assert _permission_error_case(root) == "PermissionError"
        return
    # Root ignores file permissions: the case runs in a child that becomes a user made for it.
    name = "ddmqt{}{}".format(os.getpid(), uuid.uuid4().hex[:8])
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        user = pwd.getpwnam(name)
        base = tempfile.mkdtemp(prefix="ddmq-perm-")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
                outcome = _permission_error_case(os.path.join(base, "root"))
            except BaseException as e:  # noqa: BLE001 (reported to the parent)
                outcome = "failed: {!r}".format(e)
            os.write(write_end, outcome.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            outcome = f.read()
        os.waitpid(pid, 0)
        shutil.rmtree(base)
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)
    assert outcome == "PermissionError"


def test_each_error_class_where_the_documentation_says(root, b):
    def raised(call):
        try:
            call()
        except ddmq.DdmqError as e:
            return e
        raise AssertionError("no error from {}".format(call))

    b.create_queue("q")
    cases = [
        (lambda: b.create_queue("q"), ddmq.QueueExistsError, FileExistsError, "exists"),
        (lambda: b.create_queue("../x"), ddmq.InvalidNameError, ValueError, "invalid_queue_name"),
        (lambda: b.update_settings_file("q", {"priority": "high"}), ddmq.ConfigError, ValueError,
         "config"),
        (lambda: b.delete_message(os.path.join(root, "q", "999.1.ddmq0123456789abcdef")),
         ddmq.MessageNotFoundError, FileNotFoundError, "message_not_found"),
        (lambda: b.get_message(os.path.join(root, "q", "999.2.ddmq0123456789abcdef")),
         ddmq.NotFoundError, FileNotFoundError, "io"),
        (lambda: b.get_message(os.path.join(root, "q")), ddmq.DdmqOSError, OSError, "io"),
    ]
    os.mkdir(os.path.join(root, "plain"))
    cases.append((lambda: b.publish("plain", "x"), ddmq.NotAQueueError, None, "not_a_queue"))
    corrupt = os.path.join(root, "q", "999.3.ddmq0123456789abcdef")
    with open(corrupt, "w") as f:
        f.write("{not json")
    cases.append((lambda: b.get_message(corrupt), ddmq.CorruptMessageError, ValueError, "corrupt"))
    for call, cls, builtin, code in cases:
        e = raised(call)
        assert type(e) is cls and e.error == code, repr(e)
        assert builtin is None or isinstance(e, builtin), repr(e)
    os.remove(corrupt)
    b.update_settings_file("q", {"max_message_bytes": 4})
    e = raised(lambda: b.publish("q", "too long"))
    assert type(e) is ddmq.MessageTooLargeError and isinstance(e, ValueError), repr(e)
    with open(os.path.join(root, "q", "notes.txt"), "w") as f:
        f.write("not ddmq's")
    e = raised(lambda: b.delete_queue("q"))
    assert type(e) is ddmq.ForeignFilesError and isinstance(e, OSError), repr(e)
    assert e.path == os.path.join(root, "q") and "notes.txt" in str(e)


def test_messages_as_a_context_manager_gives_back_the_message_in_hand(b):
    b.publish("q", "kept")
    b.publish("q", "next")
    with b.messages("q") as it:
        first = next(it)
        assert first.message == "kept"
        assert len(b.get_message_list("q")[1]) == 1
    # `it` is still referenced: only the with statement can have given it back.
    assert b.get_message_list("q")[1] == []
    with pytest.raises(StopIteration):
        next(it)
    assert [m.message for m in b.messages("q")] == ["kept", "next"]


def test_numeric_order_and_priority_zero(b):
    for i in range(12):
        b.publish("q", "m{}".format(i))
    assert drain(b, "q") == ["m{}".format(i) for i in range(12)]
    for p in (1000, 999, 10, 5, 0):
        b.publish("q", str(p), priority=p)
    assert drain(b, "q") == ["0", "5", "10", "999", "1000"]


def test_ack_deletes_even_a_requeue_message(b):
    b.publish("q", "x", requeue=True)
    assert b.ack(b.consume("q")) != []
    assert b.get_message_list("q") == ([], [])


def test_nack_follows_the_message_requeue_flag(b):
    b.publish("q", "dropped")
    msg = b.consume("q")
    assert b.nack(msg) == [msg.filename]
    assert b.get_message_list("q") == ([], [])
    b.publish("q", "kept", requeue=True, requeue_limit=1)
    b.nack(b.consume("q"))
    again = b.consume("q")
    assert again.message == "kept" and again.requeue_counter == 1 and again.priority == 0
    b.nack(again)  # the limit is reached: dropped
    assert b.get_message_list("q") == ([], [])


def test_settings_are_read_fresh(root, b):
    b.create_queue("q")
    assert b.publish("q", "a").priority == 999
    ddmq.broker(root).update_settings_file("q", {"priority": 7})
    deadline = time.monotonic() + 10
    while b.publish("q", "b").priority != 7:
        assert time.monotonic() < deadline, "the new setting was never seen"
        time.sleep(0.1)
    with pytest.raises(ddmq.ConfigError):
        b.update_settings_file("q", {"priority": "high"})
    assert b.get_config_file("q")["priority"] == 7


def test_settings_written_through_a_broker_reach_its_queues_at_once(root, b):
    b.create_queue("q")
    # No housekeeping (clean=False): it would make the queue read its settings again itself.
    assert b.publish("q", "a", clean=False).priority == 999  # read now, and kept for a second
    b.update_settings_file("", {"priority": 5})
    assert b.publish("q", "b", clean=False).priority == 5
    b.update_settings_file("q", {"priority": 6, "legacy": [1, "x"]})
    assert b.publish("q", "c", clean=False).priority == 6
    assert b.get_config_file("q") == {"cleaned": 0, "priority": 6, "legacy": [1, "x"]}
    assert b.get_config_file("")["priority"] == 5
    with open(os.path.join(root, "q", "ddmq.yaml")) as f:
        assert f.read() == "cleaned: 0\nlegacy:\n- 1\n- x\npriority: 6\n"


def test_ack_refuses_names_outside_the_queue(root, b):
    victim = os.path.join(root, "victim.ddmq1")
    open(victim, "w").close()
    b.publish("q", "x")
    msg = b.consume("q")
    with pytest.raises(ValueError):
        b.ack("q", [msg.filename, "../../victim.ddmq1"])
    assert os.path.exists(victim)
    assert b.get_message_list("q")[1] == [msg.filename]  # nothing was acked


def test_consumed_message_settles_itself(b):
    b.publish("q", "x", timeout=100)
    msg = b.consume("q")
    before = int(msg.filename.split(".")[0])
    time.sleep(1.1)
    assert msg.extend()
    assert int(msg.filename.split(".")[0]) > before
    assert b.get_message_list("q")[1] == [msg.filename]
    assert msg.ack() is True
    assert msg.ack() is False
    b.publish("q", "y", requeue=True)
    msg = b.consume("q")
    assert msg.nack() is True
    assert b.consume("q").requeue_counter == 1


def test_messages_acks_finished_bodies_and_gives_back_on_exception(b):
    for i in range(3):
        b.publish("q", str(i))
    seen = []
    with pytest.raises(RuntimeError):
        for msg in b.messages("q"):
            seen.append(msg.message)
            if msg.message == "1":
                raise RuntimeError("worker failed")
    waiting, in_flight = b.get_message_list("q")
    assert seen == ["0", "1"] and in_flight == [] and len(waiting) == 2
    assert [m.message for m in b.messages("q")] == ["1", "2"]
    assert b.get_message_list("q") == ([], [])


def test_messages_gives_back_on_break_and_honours_explicit_settling(b):
    for i in range(3):
        b.publish("q", str(i), requeue=True)
    nacked = []
    for msg in b.messages("q"):
        if not nacked:
            nacked.append(msg.message)
            msg.nack()  # requeued at priority 0: comes again first
            continue
        assert msg.message == "0" and msg.requeue_counter == 1
        break
    assert b.get_message_list("q")[1] == []
    assert [m.message for m in b.messages("q", wait=0.1)] == ["0", "1", "2"]


def test_wait_returns_none_when_nothing_comes(b):
    b.create_queue("q")
    assert b.consume("q", wait=0.2) is None
    assert b.consume("q", n=3, wait=0.1) is None


def test_single_messages_by_path_or_object(root, b):
    m = b.publish("q", "x")
    path = os.path.join(root, "q", m.filename)
    assert b.get_message(path).id == m.id
    assert b.delete_message(path) is True
    with pytest.raises(FileNotFoundError):
        b.delete_message(path)
    b.publish("q", "y", requeue=False)
    c = b.consume("q")
    assert b.requeue_message(os.path.join(root, "q", "work", c.filename)) is True
    c = b.consume("q")
    assert c.requeue_counter == 1
    assert b.delete_message(c) is True
    assert b.get_message_list("q") == ([], [])


def test_message_objects_like_the_original():
    m = ddmq.message(queue="q", message="Hello World!")
    assert repr(m).splitlines()[1] == "id = None"
    same = ddmq.message.json2msg(m.msg2json())
    assert vars(same) == vars(m)
    same.update({"priority": 3})
    assert same.priority == 3
    assert vars(pickle.loads(pickle.dumps(same))) == vars(same)
    with pytest.raises(ddmq.DdmqError):
        m.ack()  # not consumed through a broker


def test_console_script_is_the_rust_cli(root, ddmq_command, b):
    b.publish("q", "x")
    out = subprocess.run([ddmq_command, "view", "--format", "json", root], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == '{"q": [1, 0]}'
    out = subprocess.run([ddmq_command, "-v"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ddmq version " + ddmq.__version__
    out = subprocess.run([ddmq_command, "consume", root, "missing"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "does not exist" in out.stderr
