"""The ``ddmq`` console script: the Rust command line, run inside this process."""

import signal
import sys

from ._ddmq import run_cli


def main() -> None:
    """Run ``ddmq`` with this process's arguments and exit with its status."""
    # Python turns Ctrl-C into KeyboardInterrupt, which the Rust side would never see.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(run_cli(["ddmq"] + sys.argv[1:]))


if __name__ == "__main__":
    main()
