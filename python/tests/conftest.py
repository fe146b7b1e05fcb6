"""Fixtures shared by the tests of the ddmq Python package.

The package under test is the one installed in the running interpreter. The original ddmq 0.9.10
runs in a separate environment, as a subprocess: $DDMQ_PYTHON names its interpreter
(scripts/python-env makes one).
"""

import os
import shutil
import subprocess
import sys

import pytest


@pytest.fixture
def root(tmp_path):
    """A root directory path (not yet created)."""
    return str(tmp_path / "root")


@pytest.fixture
def original_python():
    """The interpreter with the original ddmq 0.9.10 installed."""
    python = os.environ.get("DDMQ_PYTHON")
    if not python:
        pytest.fail("set DDMQ_PYTHON to a python with ddmq 0.9.10 (scripts/python-env makes one)")
    return python


def run_original(original_python, code, *args):
    """Runs `code` with the original 0.9.10 package; returns its stdout."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([original_python, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def ddmq_command():
    """The `ddmq` console script installed next to this interpreter (the Rust CLI)."""
    path = os.path.join(os.path.dirname(sys.executable), "ddmq")
    if not os.path.exists(path):
        path = shutil.which("ddmq")
    assert path, "the ddmq console script is not installed"
    return path
