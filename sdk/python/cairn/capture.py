"""Recording calls of prediction functions and scikit-learn estimators as inference events."""

from __future__ import annotations

import functools
import inspect
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ._json import jsonable

if TYPE_CHECKING:
    from .client import Client, ModelRef


def capture(client: "Client", model: "ModelRef", *, record_input: bool = True) -> Callable:
    """Decorator: every call of the function is recorded as an inference with its arguments (the input), its
    return value (the output), latency, and on an exception the exception's class as ``error_code`` (the
    exception is re-raised). Keyword ``subject=`` passed to the call is recorded as the subject and not
    forwarded when the function does not take it."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        takes_subject = "subject" in sig.parameters

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            subject = kwargs.get("subject") if takes_subject else kwargs.pop("subject", None)
            inp: Any = None
            if record_input:
                try:
                    bound = sig.bind_partial(*args, **kwargs)
                    inp = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
                except TypeError:
                    inp = {"args": list(args), "kwargs": kwargs}
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                client.log_inference(model, input=inp, subject=subject, error_code=type(e).__name__,
                                     latency_ms=(time.perf_counter() - t0) * 1000)
                raise
            client.log_inference(model, output=out, input=inp, subject=subject,
                                 latency_ms=(time.perf_counter() - t0) * 1000)
            return out

        return wrapper

    return deco


def estimator_identity(est: Any) -> Dict[str, str]:
    """A default model identity for an estimator: its class, and the scikit-learn version as a stand-in for the
    model version (pass ``model=`` to record the registry's name and version instead)."""
    name = type(est).__name__
    version = "unknown"
    try:
        import sklearn

        version = "sklearn-" + sklearn.__version__
    except ImportError:
        pass
    return {"name": name, "version": version}


class CapturedEstimator:
    """A scikit-learn estimator whose ``predict`` and ``predict_proba`` calls are recorded: the input rows, the
    output, the model identity, latency, and for ``predict_proba`` the confidence (the top class probability; the
    mean over rows for a batch, each row's in the payload). Every other attribute is the estimator's own."""

    def __init__(self, client: "Client", estimator: Any, model: Optional["ModelRef"] = None, *,
                 record_input: bool = True) -> None:
        from .client import _model

        self._client = client
        self._est = estimator
        self._model = _model(model) if model is not None else estimator_identity(estimator)
        self._record_input = record_input

    def __getattr__(self, name: str) -> Any:
        return getattr(self._est, name)

    def _call(self, method: str, X: Any, *args: Any, subject: Optional[str] = None, **kw: Any) -> Any:
        t0 = time.perf_counter()
        inp = jsonable(X) if self._record_input else None
        try:
            out = getattr(self._est, method)(X, *args, **kw)
        except Exception as e:
            self._client.log_inference(self._model, input=inp, subject=subject, error_code=type(e).__name__,
                                       latency_ms=(time.perf_counter() - t0) * 1000, attrs={"input_source": method})
            raise
        latency = (time.perf_counter() - t0) * 1000
        confidence = None
        payload: Dict[str, Any] = {}
        output = jsonable(out)
        if method == "predict_proba":
            tops = [max(row) for row in output] if output and isinstance(output[0], list) else []
            if tops:
                confidence = sum(tops) / len(tops)
                payload["confidence_per_row"] = tops
            classes = getattr(self._est, "classes_", None)
            if classes is not None:
                payload["classes"] = jsonable(classes)
        self._client.log_inference(self._model, output=output, input=inp, subject=subject, confidence=confidence,
                                   latency_ms=latency, payload=payload or None, attrs={"input_source": method})
        return out

    def predict(self, X: Any, *args: Any, subject: Optional[str] = None, **kw: Any) -> Any:
        """The estimator's predict, recorded."""
        return self._call("predict", X, *args, subject=subject, **kw)

    def predict_proba(self, X: Any, *args: Any, subject: Optional[str] = None, **kw: Any) -> Any:
        """The estimator's predict_proba, recorded with its confidence."""
        return self._call("predict_proba", X, *args, subject=subject, **kw)
