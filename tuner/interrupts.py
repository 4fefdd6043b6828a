"""Ctrl-C during a search that is never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread is, and
where that is a finaliser or a callback (a tf.data iterator being collected,
say) it only prints "Exception ignored" and goes on: the search would run to
its end. `remembered_interrupts` raises the KeyboardInterrupt at once, as
Python does, and also sets an event that the subnet tuner checks before each
trial, so a swallowed interrupt still stops the search there.
"""
from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def remembered_interrupts():
    """An event set by SIGINT while the block runs (Python's handling otherwise unchanged).

    Off the main thread, or where SIGINT is not Python's default (ignored in a background job,
    or handled by the caller), the handler is left alone and the event is never set."""
    event = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield event
        return

    def interrupt(signum, frame):
        event.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)
