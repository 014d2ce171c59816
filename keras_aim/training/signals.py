"""Turns SIGINT and SIGTERM into a checkpoint-and-stop request."""

import signal
import sys


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a checkpoint-and-stop request.

    A context manager around `fit`: the first signal asks `run_checkpoint` (a
    `RunCheckpoint`) to stop after the current step; a second SIGINT
    interrupts at once (`KeyboardInterrupt`).
    """

    def __init__(self, run_checkpoint):
        self.run_checkpoint = run_checkpoint
        self.signal = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        self.run_checkpoint.request_stop(signum)
        print(
            f"\nReceived {signal.Signals(signum).name}: finishing this step, "
            "writing a checkpoint and stopping.",
            file=sys.stderr,
        )

    def __enter__(self):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # Not the main thread: leave signals alone.
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
