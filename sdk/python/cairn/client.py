"""The Cairn client: append events to an AI system's log, batched in the background or synchronously."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._json import jsonable
from .spool import Spool, load_spool_key

log = logging.getLogger("cairn")

ModelRef = Union[Tuple[str, str], Mapping[str, str], "Model"]


@dataclass(frozen=True)
class Model:
    """A model version: its name, version and optionally the artefact digest."""

    name: str
    version: str
    digest: Optional[str] = None

    def as_dict(self) -> Dict[str, str]:
        d = {"name": self.name, "version": self.version}
        if self.digest:
            d["digest"] = self.digest
        return d


class CairnError(Exception):
    """Base class of the SDK's errors."""


class Rejected(CairnError):
    """The server refused an event for its content (HTTP 4xx); retrying it cannot help.

    ``problem`` is the server's RFC 9457 problem document, which names the field at fault."""

    def __init__(self, status: int, problem: Mapping[str, Any], events: Sequence[Mapping[str, Any]] = ()):
        self.status, self.problem, self.events = status, dict(problem), list(events)
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')} {problem.get('errors', '')}".strip())


class Unavailable(CairnError):
    """The server could not be reached or was busy, and the retry budget ran out."""


class BufferFull(CairnError):
    """The background buffer is full (the server is slow or down): the event was NOT accepted.

    The caller decides: retry later, slow down, or fail the inference. Nothing is dropped silently."""


def uuid7(now: Optional[float] = None) -> str:
    """A new random UUIDv7 (time-ordered), the form Cairn wants for idempotent event ids."""
    ms = int((time.time() if now is None else now) * 1000)
    rnd = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rnd >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rnd & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _model(m: Optional[ModelRef]) -> Optional[Dict[str, str]]:
    if m is None:
        return None
    if isinstance(m, Model):
        return m.as_dict()
    if isinstance(m, tuple):
        return {"name": str(m[0]), "version": str(m[1])}
    return {k: str(v) for k, v in dict(m).items()}


@dataclass
class Stats:
    """Counters of a client's life: what it accepted, delivered, retried and could not deliver."""

    accepted: int = 0
    delivered: int = 0
    duplicates: int = 0
    retries: int = 0
    rejected: int = 0
    buffer_full: int = 0
    errors: List[str] = field(default_factory=list)


class Client:
    """Appends events to one AI system's log on a Cairn server.

    In the default ``mode="background"`` a ``log_*`` call puts the event in a bounded buffer and returns its id;
    a background thread sends the buffer in batches and retries with the same event ids (idempotency keys), so
    a retry never records an event twice. When the buffer is full the call blocks up to ``block_timeout`` and then
    raises :class:`BufferFull` (back-pressure that reports rather than drops). :meth:`flush` waits until every
    accepted event is durable.

    In ``mode="sync"`` a ``log_*`` call returns only once the server has made the event durable (fsync'd), and
    raises otherwise: once it returns, a crash of this process cannot lose the event.

    With ``spool_dir`` (background mode), accepted events are first written and fsync'd to a local spool file,
    so events accepted while the server is unreachable survive a crash of this process and are delivered, in
    order, by the next client opened on the same directory. Spooled events hold personal data not yet
    pseudonymised, so each is encrypted (AES-256-GCM, needs the ``cryptography`` package) under ``spool_key`` (32
    bytes), or a key file (``CAIRN_SPOOL_KEY_FILE``, default ``<spool_dir>/spool.key``, created 0600 if missing);
    ``spool_plaintext=True`` writes JSON in clear instead, by explicit choice.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7700",
        token: Optional[str] = None,
        system: Optional[str] = None,
        *,
        mode: str = "background",
        batch_size: int = 256,
        flush_interval: float = 0.05,
        max_buffer: int = 10000,
        block_timeout: float = 5.0,
        retry_for: float = 60.0,
        timeout: float = 30.0,
        spool_dir: Optional[str] = None,
        spool_key: Optional[bytes] = None,
        spool_plaintext: bool = False,
        on_error: Optional[Callable[[CairnError], None]] = None,
        deployment: Optional[str] = None,
    ) -> None:
        if mode not in ("background", "sync"):
            raise ValueError("mode must be 'background' or 'sync'")
        if token is None:
            token = os.environ.get("CAIRN_TOKEN")
        if token is None and os.environ.get("CAIRN_TOKEN_FILE"):
            with open(os.environ["CAIRN_TOKEN_FILE"]) as f:
                token = f.read().strip()
        self.url = url.rstrip("/")
        self.token = token
        self.system = system or os.environ.get("CAIRN_SYSTEM")
        if not self.system:
            raise ValueError("system is required (or set CAIRN_SYSTEM)")
        self.mode = mode
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.block_timeout = block_timeout
        self.retry_for = retry_for
        self.timeout = timeout
        self.on_error = on_error
        self.deployment = deployment
        self.stats = Stats()
        self._cv = threading.Condition()
        self._buf: Deque[Dict[str, Any]] = deque()
        self._inflight = 0
        self._closed = False
        self._spool = None
        if spool_dir:
            if spool_key is None and not spool_plaintext:
                # The default key file sits beside the spool; keep it elsewhere (CAIRN_SPOOL_KEY_FILE) in production.
                os.makedirs(spool_dir, mode=0o700, exist_ok=True)
                spool_key = load_spool_key(os.environ.get("CAIRN_SPOOL_KEY_FILE") or os.path.join(spool_dir, "spool.key"))
            self._spool = Spool(spool_dir, None if spool_plaintext else spool_key)
        self._thread: Optional[threading.Thread] = None
        if mode == "background":
            self._thread = threading.Thread(target=self._run, name="cairn-sender", daemon=True)
            self._thread.start()

    # --- events ---

    def log(self, event: Mapping[str, Any]) -> str:
        """Append any event (client form, docs/events.md); returns its id. An id is added when absent."""
        ev = {k: v for k, v in event.items() if v is not None}
        ev.setdefault("id", uuid7())
        ev.setdefault("time", _now())
        if self.deployment and "deployment" not in ev:
            ev["deployment"] = self.deployment
        ev = jsonable(ev)
        if self.mode == "sync":
            self._send([ev])
            return ev["id"]
        self._enqueue(ev)
        return ev["id"]

    def log_inference(
        self,
        model: ModelRef,
        output: Any = None,
        *,
        input: Any = None,
        subject: Optional[str] = None,
        confidence: Optional[float] = None,
        latency_ms: Optional[float] = None,
        error_code: Optional[str] = None,
        attrs: Optional[Mapping[str, Any]] = None,
        payload: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
        time: Optional[str] = None,
        refs: Optional[Sequence[str]] = None,
    ) -> str:
        """Record one inference (Art. 12): the model version, what went in and came out, and facts about it.

        ``input``, ``output`` and ``subject`` go in the sealed payload (the system's field policy pseudonymises
        them at capture); ``confidence``, ``latency_ms``, ``error_code`` and ``attrs`` are non-personal facts stored
        in clear. An inference needs an output or an error code."""
        a = dict(attrs or {})
        if confidence is not None:
            a["confidence"] = float(confidence)
        if latency_ms is not None:
            a["latency_ms"] = float(latency_ms)
        if error_code is not None:
            a["error_code"] = error_code
        p = dict(payload or {})
        if input is not None:
            p["input"] = input
        if subject is not None:
            p["subject"] = subject
        if output is not None or error_code is None:
            p["output"] = output
        return self.log({"id": id, "type": "inference", "time": time, "model": _model(model), "refs": list(refs) if refs else None,
                         "attrs": a or None, "payload": p or None})

    def log_oversight(
        self,
        refs: Union[str, Sequence[str]],
        action: str,
        *,
        overseer: Optional[str] = None,
        rationale: Optional[str] = None,
        attrs: Optional[Mapping[str, Any]] = None,
        payload: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
    ) -> str:
        """Record a human oversight action on earlier events (Art. 14): viewed, confirmed, overridden, escalated,
        stopped, verified, … ``overseer`` and ``rationale`` are personal and go in the sealed payload."""
        if isinstance(refs, str):
            refs = [refs]
        a = dict(attrs or {})
        a["action"] = action
        p = dict(payload or {})
        if overseer is not None:
            p["overseer"] = overseer
        if rationale is not None:
            p["rationale"] = rationale
        return self.log({"id": id, "type": "oversight", "refs": list(refs), "attrs": a, "payload": p or None})

    # Lifecycle helpers (docs/events.md for each type's fields).

    def log_dataset_version(self, name: str, version: str, **attrs: Any) -> str:
        """Record a dataset version (Art. 10, Annex IV 2(d)): name, version and facts such as rows and schema.

        The server needs an identity for the data: ``digest`` (``"sha256:<64 hex>"`` of the content), ``dvc_md5``
        (with ``git_revision``), ``mlflow_digest`` or ``uri``.
        """
        return self.log({"type": "dataset.version", "attrs": {"name": name, "version": version, **attrs}})

    def log_training_run(self, run_id: str, *, model: Optional[ModelRef] = None, **attrs: Any) -> str:
        """Record a training run: its id and params, metrics, code revision, status."""
        return self.log({"type": "training.run", "model": _model(model), "attrs": {"run_id": run_id, **attrs}})

    def log_model_version(self, model: ModelRef, **attrs: Any) -> str:
        """Record a model version: format, run_id, artefact digests, change classification."""
        return self.log({"type": "model.version", "model": _model(model), "attrs": attrs or None})

    def log_evaluation(self, model: ModelRef, metrics: Mapping[str, float], *, passed: Optional[bool] = None, **attrs: Any) -> str:
        """Record an evaluation of a model version: metrics, thresholds, dataset, whether it passed."""
        a: Dict[str, Any] = {"metrics": dict(metrics), **attrs}
        if passed is not None:
            a["passed"] = passed
        return self.log({"type": "evaluation", "model": _model(model), "attrs": a})

    def log_approval(self, model: ModelRef, refs: Union[str, Sequence[str]], decision: str, *,
                     scope: Optional[str] = None, rationale: Optional[str] = None) -> str:
        """Record an approval or rejection (``decision``: approve | reject) of a model version, citing the events
        it relied on (``refs``: its evaluations and document versions). The server checks it against the system's
        lifecycle rules (four eyes, an evaluation of the same version) and records a rule-breaking approval as
        such, not as an approval."""
        if isinstance(refs, str):
            refs = [refs]
        a: Dict[str, Any] = {"decision": decision}
        if scope:
            a["scope"] = scope
        return self.log({"type": "approval", "model": _model(model), "refs": list(refs), "attrs": a,
                         "payload": {"rationale": rationale} if rationale else None})

    def log_deployment(self, model: ModelRef, deployment: str, action: str = "deployed", **attrs: Any) -> str:
        """Record a deployment, retirement or rollback (``action``) of a model version to an environment."""
        return self.log({"type": "deployment", "model": _model(model), "deployment": deployment,
                         "attrs": {"action": action, **attrs}})

    # --- capture helpers ---

    def capture(self, model: ModelRef, *, record_input: bool = True) -> Callable:
        """Decorator recording every call of a prediction function as an inference (see :func:`cairn.capture`)."""
        from .capture import capture

        return capture(self, model, record_input=record_input)

    def wrap(self, estimator: Any, model: Optional[ModelRef] = None, **kw: Any) -> Any:
        """Wrap a scikit-learn estimator so ``predict`` / ``predict_proba`` calls are recorded."""
        from .capture import CapturedEstimator

        return CapturedEstimator(self, estimator, model, **kw)

    # --- delivery ---

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every accepted event is durable on the server. Raises :class:`Unavailable` on timeout."""
        if self.mode == "sync":
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            self._cv.notify_all()
            while self._buf or self._inflight or (self._spool and self._spool.pending()):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Unavailable(f"{self.pending()} events not yet delivered")
                self._cv.wait(0.05 if remaining is None else min(remaining, 0.05))

    def pending(self) -> int:
        """Events accepted but not yet durable on the server."""
        with self._cv:
            n = len(self._buf) + self._inflight
        if self._spool:
            n = max(n, self._spool.pending())
        return n

    def close(self, timeout: Optional[float] = 30.0) -> None:
        """Deliver what is buffered (up to ``timeout``) and stop the background thread."""
        try:
            self.flush(timeout)
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()
            if self._thread:
                self._thread.join(timeout=5)
            if self._spool:
                self._spool.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _enqueue(self, ev: Dict[str, Any]) -> None:
        deadline = time.monotonic() + self.block_timeout
        with self._cv:
            if self._closed:
                raise CairnError("client is closed")
            while len(self._buf) + (self._spool.pending() if self._spool else 0) >= self.max_buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stats.buffer_full += 1
                    raise BufferFull(f"{self.max_buffer} events wait for the server; event {ev['id']} was not accepted")
                self._cv.wait(min(remaining, 0.05))
            if self._spool:
                self._spool.put(ev)  # fsync'd before the call returns
            else:
                self._buf.append(ev)
            self.stats.accepted += 1
            if len(self._buf) >= self.batch_size or (self._spool and self._spool.pending() >= self.batch_size):
                self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._buf and not (self._spool and self._spool.pending()) and not self._closed:
                    self._cv.wait(self.flush_interval)
                if self._closed and not self._buf and not (self._spool and self._spool.pending()):
                    return
                if self._spool:
                    batch = self._spool.peek(self.batch_size)
                else:
                    batch = [self._buf.popleft() for _ in range(min(self.batch_size, len(self._buf)))]
                self._inflight = len(batch)
            if not batch:
                with self._cv:
                    self._inflight = 0
                if self._closed:
                    return
                continue
            try:
                self._deliver(batch)
            finally:
                with self._cv:
                    if self._spool:
                        self._spool.ack(len(batch))
                    self._inflight = 0
                    self._cv.notify_all()

    def _deliver(self, batch: List[Dict[str, Any]]) -> None:
        """Send a batch, retrying until it is durable; a rejected batch is split to find and report the culprit."""
        while True:
            try:
                self._send(batch, retry_for=None)
                return
            except Rejected as e:
                if len(batch) == 1:
                    self._report(e)
                    return
                idx = _problem_event(e.problem)
                if idx is not None and 0 <= idx < len(batch):
                    if idx > 0:
                        self._send(batch[:idx], retry_for=None)
                    self._report(Rejected(e.status, e.problem, [batch[idx]]))
                    batch = batch[idx + 1:]
                    if not batch:
                        return
                    continue
                for ev in batch:
                    self._deliver([ev])
                return

    def _report(self, e: CairnError) -> None:
        self.stats.rejected += 1
        self.stats.errors.append(str(e))
        log.error("cairn: event rejected by the server: %s", e)
        if self.on_error:
            try:
                self.on_error(e)
            except Exception:  # noqa: BLE001 - a faulty callback must not stop delivery
                log.exception("cairn: on_error callback failed")

    def _send(self, events: List[Dict[str, Any]], retry_for: Optional[float] = -1.0) -> List[Dict[str, Any]]:
        """POST events; retries transient failures with backoff. retry_for None: forever; -1: self.retry_for."""
        if retry_for == -1.0:
            retry_for = self.retry_for
        body = "\n".join(json.dumps(ev, separators=(",", ":"), allow_nan=False) for ev in events).encode()
        deadline = None if retry_for is None else time.monotonic() + retry_for
        delay = 0.05
        while True:
            req = urllib.request.Request(f"{self.url}/v1/systems/{self.system}/events", data=body, method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            wait = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    out = json.loads(resp.read())["events"]
                    self.stats.delivered += len(out)
                    self.stats.duplicates += sum(1 for r in out if r.get("duplicate"))
                    return out
            except urllib.error.HTTPError as e:
                raw = e.read()
                try:
                    problem = json.loads(raw)
                except ValueError:
                    problem = {"title": e.reason}
                if e.code in (400, 409, 413, 422):
                    raise Rejected(e.code, problem, events) from None
                ra = e.headers.get("Retry-After") if e.headers else None
                if ra and ra.isdigit():
                    wait = float(ra)
                err: Exception = e
            except (urllib.error.URLError, OSError, ValueError) as e:
                err = e
            self.stats.retries += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise Unavailable(f"cairn server unavailable: {err}") from None
            time.sleep(wait if wait is not None else delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _problem_event(problem: Mapping[str, Any]) -> Optional[int]:
    errs = problem.get("errors") or []
    if errs and isinstance(errs[0], dict) and isinstance(errs[0].get("event"), int):
        return errs[0]["event"]
    return None


def read_checkpoint_size(url: str, system: str) -> int:
    """The size of a log's latest signed checkpoint (open route; no token needed)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/logs/{system}/checkpoint", timeout=10) as resp:
        return int(resp.read().decode().split("\n")[1])


__all__: Iterable[str] = ["Client", "Model", "CairnError", "Rejected", "Unavailable", "BufferFull", "Stats", "uuid7"]
