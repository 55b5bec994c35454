"""What comes back from a sandbox: JSON lines of plain values on stdout, its prints on stderr.

Everything on these pipes was written by code the learner controls, so it is read as untrusted
data: lines over ``MAX_LINE`` bytes, output over ``MAX_RESULTS`` bytes, JSON that is not an
object, too deep or not plain values are dropped (and counted); the prints keep their first
``output_limit`` bytes. Reading never blocks past the deadline the caller gives.
"""
from __future__ import annotations

import json
import os
import selectors
import time
from typing import Any

MAX_LINE = 4 << 20
MAX_RESULTS = 64 << 20
MAX_DEPTH = 12


def plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON data no deeper than ``MAX_DEPTH`` (iteratively bounded)."""
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v, depth + 1) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


class Lines:
    """Reads the sandbox's two pipes; :meth:`next` returns its next message or None at the end."""

    def __init__(self, stdout, stderr, output_limit: int, process=None):
        self.selector = selectors.DefaultSelector()
        for stream in (stdout, stderr):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ)
        self.stdout, self.stderr = stdout, stderr
        self.buffer, self.messages = bytearray(), []
        self.output, self.printed, self.output_limit = bytearray(), 0, output_limit
        self.received, self.dropped, self.open = 0, 0, 2
        self.process = process      # once it has exited, a process it left behind holding the
                                    # pipes open does not keep the grader waiting

    def next(self, deadline: float) -> dict | None:
        """The next message; None once stdout closed; raises TimeoutError past ``deadline``."""
        while not self.messages:
            if self.open == 0 or self.stdout.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready = self.selector.select(min(left, 0.25))
            for key, _ in ready:
                self._read(key.fileobj)
            if not ready and self.process is not None and self.process.poll() is not None:
                self.open = 0
        return self.messages.pop(0)

    def drain(self, seconds: float = 0.5) -> None:
        """Read what is left of the prints, for at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while any(key.fileobj is self.stderr for key in self.selector.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.selector.select(left):
                if key.fileobj is self.stderr:
                    self._read(self.stderr)
                else:
                    self.selector.unregister(key.fileobj)

    def _read(self, stream) -> None:
        try:
            chunk = os.read(stream.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(stream)
            self.open -= 1
            if stream is self.stdout:
                self.open = 0   # results are over; stderr's tail is not worth waiting for
            return
        if stream is self.stderr:
            self.printed += len(chunk)
            self.output += chunk[:max(0, self.output_limit - len(self.output))]
            return
        self.received += len(chunk)
        if self.received > MAX_RESULTS:
            raise OverflowError(f"more than {MAX_RESULTS >> 20} MB of results")
        start, search = 0, len(self.buffer)      # only the new bytes can hold a new newline
        self.buffer += chunk
        while (end := self.buffer.find(b"\n", search)) >= 0:
            search = end + 1
            self._parse(bytes(self.buffer[start:end]))
            start = end + 1
        del self.buffer[:start]
        if len(self.buffer) > MAX_LINE:
            self.buffer.clear()
            self.dropped += 1

    def _parse(self, line: bytes) -> None:
        if len(line) > MAX_LINE:
            self.dropped += 1
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self.dropped += 1
            return
        if isinstance(message, dict) and plain(message):
            self.messages.append(message)
        else:
            self.dropped += 1
