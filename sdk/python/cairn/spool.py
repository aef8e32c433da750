"""A local durable spool: events are appended to a file and fsync'd before they count as accepted, and read
back in order until the server has them."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Tuple


class Spool:
    """An append-only JSON-lines file with a cursor file saying how many bytes were delivered.

    A torn last line (a crash mid-write) is cut off when the spool is opened: it was never acknowledged to the
    caller, whose ``put`` had not returned."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "spool.jsonl")
        self.cursor_path = os.path.join(directory, "cursor")
        self._lock = threading.Lock()
        self._pending: Deque[Tuple[int, Dict[str, Any]]] = deque()  # (line length in bytes, event)
        off = 0
        if os.path.exists(self.cursor_path):
            with open(self.cursor_path) as f:
                off = int(f.read().strip() or 0)
        self._f = open(self.path, "a+b")
        self._f.seek(0)
        data = self._f.read()
        if off > len(data):
            off = 0
        good = off
        for line in data[off:].split(b"\n"):
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                break
            if good + len(line) + 1 > len(data):
                break  # no newline: torn
            self._pending.append((len(line) + 1, ev))
            good += len(line) + 1
        if good < len(data):
            self._f.truncate(good)
        self._off = off

    def put(self, ev: Dict[str, Any]) -> None:
        line = json.dumps(ev, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._lock:
            self._f.seek(0, os.SEEK_END)
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._pending.append((len(line), ev))

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def peek(self, n: int) -> List[Dict[str, Any]]:
        with self._lock:
            return [ev for _, ev in list(self._pending)[:n]]

    def ack(self, n: int) -> None:
        """Record durably that the first n pending events were delivered."""
        with self._lock:
            for _ in range(min(n, len(self._pending))):
                size, _ = self._pending.popleft()
                self._off += size
            if not self._pending:
                # Everything is delivered: start the file afresh.
                self._f.truncate(0)
                self._off = 0
            tmp = self.cursor_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self._off))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cursor_path)

    def close(self) -> None:
        with self._lock:
            self._f.close()
