"""A local durable spool: events are appended to a file and fsync'd before they count as accepted, and read
back in order until the server has them.

Spooled events are as the application sent them — before the server pseudonymises and seals them — so each line
is encrypted (AES-256-GCM under a spool key, with the ``cryptography`` package: ``pip install 'cairn[spool]'``)
unless the caller explicitly accepts plaintext."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

_AAD = b"cairn/v1/python-spool"


def load_spool_key(path: str) -> bytes:
    """Read a spool key file (32 random bytes, base64), creating it (mode 0600) if it does not exist."""
    try:
        with open(path, "rb") as f:
            key = base64.b64decode(f.read().strip(), validate=True)
    except FileNotFoundError:
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
    if len(key) != 32:
        raise ValueError(f"spool key {path}: want 32 bytes in base64")
    return key


class _Cipher:
    """AES-256-GCM per line: base64(nonce || ciphertext), a fresh random 96-bit nonce each."""

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError("an encrypted spool needs the 'cryptography' package: pip install 'cairn[spool]' "
                               "(or pass spool_plaintext=True to accept personal data in clear on disk)") from e
        if len(key) != 32:
            raise ValueError("spool key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plain, _AAD))

    def open(self, line: bytes) -> bytes:
        raw = base64.b64decode(line, validate=True)
        return self._aead.decrypt(raw[:12], raw[12:], _AAD)


class Spool:
    """An append-only JSON-lines file with a cursor file saying how many bytes were delivered.

    A torn last line (a crash mid-write) is cut off when the spool is opened: it was never acknowledged to the
    caller, whose ``put`` had not returned."""

    def __init__(self, directory: str, key: Optional[bytes] = None) -> None:
        """key: 32 bytes to encrypt every line with; None writes JSON in clear (the caller accepted that)."""
        self._cipher = _Cipher(key) if key is not None else None
        os.makedirs(directory, mode=0o700, exist_ok=True)
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
                ev = json.loads(self._cipher.open(line) if self._cipher else line)
            except ValueError:
                break
            except Exception as e:  # a line that does not decrypt: the wrong key, or damage
                if good + len(line) + 1 > len(data):
                    break  # torn last line
                raise ValueError(f"spool {self.path}: a line does not decrypt (wrong spool key?)") from e
            if good + len(line) + 1 > len(data):
                break  # no newline: torn
            self._pending.append((len(line) + 1, ev))
            good += len(line) + 1
        if good < len(data):
            self._f.truncate(good)
        self._off = off

    def put(self, ev: Dict[str, Any]) -> None:
        line = json.dumps(ev, separators=(",", ":"), allow_nan=False).encode()
        if self._cipher:
            line = self._cipher.seal(line)
        line += b"\n"
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
