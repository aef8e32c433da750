"""Cairn's Python SDK: record what a high-risk AI system does — every inference, every human intervention, every
lifecycle step — in its tamper-evident Cairn log (EU AI Act Art. 12).

    import cairn
    c = cairn.Client("http://127.0.0.1:7700", token="...", system="credit-scoring")
    eid = c.log_inference(("credit", "3"), output={"score": 712}, input=features, subject="applicant-17")
    c.log_oversight(eid, "overridden", overseer="reviewer-4", rationale="income verified by phone")
    c.close()
"""

from .capture import CapturedEstimator, capture
from .client import BufferFull, CairnError, Client, Model, Rejected, Stats, Unavailable, uuid7

__all__ = ["Client", "Model", "CairnError", "Rejected", "Unavailable", "BufferFull", "Stats", "uuid7", "capture",
           "CapturedEstimator"]
__version__ = "0.1.0"
