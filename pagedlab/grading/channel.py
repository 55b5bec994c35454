"""The private result channel between a sandbox and the grader: nonce-tagged JSON frames.

A frame is ``MAGIC + nonce (16 bytes) + length (8 bytes, big-endian) + JSON``. The sandbox writes
frames on a pipe of its own (never stdout, which the learner's prints share); the grader reads
them with a deadline and treats anything else on the pipe as tampering.
"""
from __future__ import annotations

import json
import os
import select
import time

MAGIC = b"PLG1"
MAX_FRAME = 8 << 20       # bytes: a bigger frame is not one the sandbox wrote


class Tampered(Exception):
    """The private channel carried something the sandbox did not write."""


class Channel:
    """Length-prefixed, nonce-tagged JSON frames on a pipe the learner's prints never reach."""

    def __init__(self, fd: int, nonce: str):
        self._fd, self._tag = fd, MAGIC + bytes.fromhex(nonce)
        self._write, self._dumps = os.write, json.dumps   # bound before any learner code runs

    def send(self, message: dict) -> None:
        payload = self._dumps(message, default=repr).encode()
        data = self._tag + len(payload).to_bytes(8, "big") + payload
        while data:
            data = data[self._write(self._fd, data):]


class Frames:
    """Reads nonce-tagged frames from the channel pipe, with a deadline."""

    def __init__(self, fd: int, nonce: str):
        self.fd, self.tag, self.buffer = fd, MAGIC + bytes.fromhex(nonce), bytearray()
        self.closed = False

    def next(self, deadline: float) -> dict | None:
        """The next message; None at end of file; raises TimeoutError past ``deadline``."""
        while True:
            message = self._parse()
            if message is not None:
                return message
            if self.closed:
                if self.buffer:
                    raise Tampered("a partial frame at the end of the channel")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if chunk:
                    self.buffer += chunk
                else:
                    self.closed = True

    def _parse(self) -> dict | None:
        head = len(self.tag) + 8
        if len(self.buffer) < head:
            if self.buffer and not self.tag.startswith(bytes(self.buffer[:len(self.tag)])):
                raise Tampered("bytes without this run's nonce")
            return None
        if bytes(self.buffer[:len(self.tag)]) != self.tag:
            raise Tampered("a frame without this run's nonce")
        size = int.from_bytes(self.buffer[len(self.tag):head], "big")
        if size > MAX_FRAME:
            raise Tampered(f"a frame of {size} bytes")
        if len(self.buffer) < head + size:
            return None
        payload = bytes(self.buffer[head:head + size])
        del self.buffer[:head + size]
        try:
            message = json.loads(payload)
        except ValueError:
            raise Tampered("a frame that is not JSON") from None
        if not isinstance(message, dict):
            raise Tampered("a frame that is not an object")
        return message
