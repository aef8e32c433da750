import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cairn

HERE = os.path.dirname(__file__)


def test_background_batching_delivers_everything(server, system):
    c = cairn.Client(server.url, server.token, system, batch_size=64)
    ids = [c.log_inference(("credit", "3"), output={"score": i}, input={"income": i}, confidence=0.5) for i in range(300)]
    c.flush(timeout=30)
    assert c.pending() == 0
    assert c.stats.delivered == 300
    evs = server.wait_events(system, 300)
    assert sorted(e["id"] for e in evs) == sorted(ids)
    c.close()


def test_retries_are_idempotent(server, system):
    c = cairn.Client(server.url, server.token, system, mode="sync")
    eid, t = cairn.uuid7(), "2026-11-30T01:00:00Z"
    c.log_inference(("credit", "3"), output=1, id=eid, time=t)
    c.log_inference(("credit", "3"), output=1, id=eid, time=t)  # a retry of the same event
    assert c.stats.duplicates == 1
    assert len(server.wait_events(system, 1)) == 1


def test_server_down_then_back_loses_nothing(server, system):
    c = cairn.Client(server.url, server.token, system, batch_size=10, flush_interval=0.01)
    server.kill()
    ids = [c.log_inference(("credit", "3"), output=i) for i in range(50)]
    time.sleep(0.3)
    assert c.pending() == 50 and c.stats.retries > 0
    server.start()
    c.flush(timeout=30)
    evs = server.wait_events(system, 50)
    assert sorted(e["id"] for e in evs) == sorted(ids)  # each once: retries reuse the ids
    c.close()


def test_full_buffer_reports_instead_of_dropping(server, system):
    c = cairn.Client(server.url, server.token, system, max_buffer=5, block_timeout=0.2, batch_size=1)
    server.kill()
    accepted = []
    with pytest.raises(cairn.BufferFull):
        for i in range(100):
            accepted.append(c.log_inference(("credit", "3"), output=i))
    assert c.stats.buffer_full == 1
    assert len(accepted) <= 6  # the buffer plus the batch in flight
    server.start()
    c.flush(timeout=30)
    assert sorted(e["id"] for e in server.wait_events(system, len(accepted))) == sorted(accepted)
    c.close()


def test_rejected_event_is_reported_and_the_rest_delivered(server, system):
    errors = []
    c = cairn.Client(server.url, server.token, system, on_error=errors.append, batch_size=100, flush_interval=0.2)
    good1 = c.log_inference(("credit", "3"), output=1)
    c.log_inference(("credit", "3"), output=2, attrs={"applicant_name": "Jane Roe"})  # not an allowed attribute
    good2 = c.log_inference(("credit", "3"), output=3)
    c.flush(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], cairn.Rejected) and errors[0].status == 422
    assert "Jane Roe" not in str(errors[0])  # the server never quotes values
    assert c.stats.rejected == 1
    assert sorted(e["id"] for e in server.wait_events(system, 2)) == sorted([good1, good2])
    c.close()


def test_sync_mode_raises_on_rejection(server, system):
    c = cairn.Client(server.url, server.token, system, mode="sync")
    with pytest.raises(cairn.Rejected) as e:
        c.log({"type": "inference", "model": {"name": "m"}, "payload": {"output": 1}})
    assert any(err.get("field") == "/model/version" for err in e.value.problem["errors"])


def test_sync_mode_loses_nothing_when_killed(server, system):
    """A process logging in sync mode is killed (SIGKILL) right after a call returned: every event whose call
    returned is in the log."""
    script = os.path.join(HERE, "sync_writer.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    p = subprocess.Popen([sys.executable, script, server.url, server.token, system], stdout=subprocess.PIPE, text=True, env=env)
    returned = []
    for line in p.stdout:
        returned.append(line.strip())
        if len(returned) == 25:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    got = {e["id"] for e in server.wait_events(system, len(returned))}
    assert set(returned) <= got


def test_spool_survives_a_crash_while_the_server_is_down(server, system, tmp_path):
    spool = str(tmp_path / "spool")
    script = os.path.join(HERE, "spool_writer.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    server.kill()
    p = subprocess.Popen([sys.executable, script, server.url, server.token, system, spool], stdout=subprocess.PIPE, text=True, env=env)
    accepted = []
    for line in p.stdout:
        accepted.append(line.strip())
        if len(accepted) == 20:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    server.start()
    c = cairn.Client(server.url, server.token, system, spool_dir=spool)
    c.flush(timeout=30)
    c.close()
    evs = server.wait_events(system, len(accepted))
    assert set(accepted) <= {e["id"] for e in evs}
    # Delivered in the order accepted.
    order = [e["id"] for e in sorted(evs, key=lambda e: e["index"])]
    assert [i for i in order if i in accepted][: len(accepted)] == accepted


def test_oversight_and_lifecycle(server, system):
    c = cairn.Client(server.url, server.token, system, mode="sync")
    ds = c.log_dataset_version("applications", "2026-11", rows=1000, uri="s3://bank-ml/applications/2026-11.parquet")
    run = c.log_training_run("run-1", params={"C": "1.0"}, metrics={"auc": 0.91})
    mv = c.log_model_version(("credit", "3"), run_id="run-1")
    ev = c.log_evaluation(("credit", "3"), {"auc": 0.91}, passed=True)
    ap = c.log_approval(("credit", "3"), [mv, ev], "approve", rationale="meets thresholds")
    dep = c.log_deployment(("credit", "3"), "prod-eu")
    inf = c.log_inference(("credit", "3"), output={"score": 512}, subject="applicant-9")
    ov = c.log_oversight(inf, "overridden", overseer="reviewer-4", rationale="income verified")
    evs = server.wait_events(system, 9, type_=None)
    types = [e["type"] for e in evs if e["type"] not in ("system.registered", "access", "anomaly")]
    assert types[:8] == ["dataset.version", "training.run", "model.version", "evaluation", "approval", "deployment", "inference", "oversight"]
    # One token registered and approved the version: the server records the approval as breaking four eyes and
    # raises an alert (an anomaly event) — the SDK cannot make an approval count by itself.
    assert "anomaly" in [e["type"] for e in evs]
    rec = server.get(system, ov, payload=True)
    env = json.loads(json.dumps(rec["envelope"]))
    assert env["refs"] == [inf] and env["attrs"]["action"] == "overridden"
    assert rec["payload"]["overseer"] == "reviewer-4"
    assert ds and run and ap and dep


def test_sklearn_wrapper_and_decorator(server, system):
    np = pytest.importorskip("numpy")
    sk = pytest.importorskip("sklearn.linear_model")
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    y = np.array([0, 1, 0, 1])
    c = cairn.Client(server.url, server.token, system, mode="sync")
    est = c.wrap(sk.LogisticRegression().fit(X, y), model=("toy", "1"))
    proba = est.predict_proba(X[:2], subject="applicant-1")
    pred = est.predict(X[:1])
    assert est.classes_.tolist() == [0, 1]  # everything else is the estimator's

    @c.capture(("rules", "2"))
    def decide(income, debt=0):
        if income < 0:
            raise ValueError("negative income")
        return {"approve": income > 2 * debt}

    assert decide(100, debt=10) == {"approve": True}
    with pytest.raises(ValueError):
        decide(-1)
    evs = server.wait_events(system, 4)
    recs = [server.get(system, e["id"], payload=True) for e in sorted(evs, key=lambda e: e["index"])]
    p0 = recs[0]
    assert p0["envelope"]["model"] == {"name": "toy", "version": "1"}
    assert abs(p0["envelope"]["attrs"]["confidence"] - float(proba.max(axis=1).mean())) < 1e-9
    assert p0["payload"]["subject"] == "applicant-1" and p0["payload"]["input"] == X[:2].tolist()
    assert recs[1]["payload"]["output"] == pred.tolist()
    assert recs[2]["payload"]["input"] == {"income": 100, "debt": 10} and recs[2]["payload"]["output"] == {"approve": True}
    assert recs[3]["envelope"]["attrs"]["error_code"] == "ValueError"


def test_spool_is_encrypted(server, system, tmp_path):
    spool = str(tmp_path / "spool")
    down = cairn.Client("http://127.0.0.1:9", server.token, system, spool_dir=spool, retry_for=0.1)
    down.log_inference(("credit", "3"), output={"score": 1}, subject="Jane Roe, IBAN DE89370400440532013000")
    with pytest.raises(cairn.Unavailable):
        down.close(timeout=0.5)  # the server is unreachable: the event stays in the spool
    raw = open(os.path.join(spool, "spool.jsonl"), "rb").read()
    assert raw and b"Jane Roe" not in raw and b"DE8937" not in raw
    key = open(os.path.join(spool, "spool.key"), "rb").read()
    assert os.stat(os.path.join(spool, "spool.key")).st_mode & 0o077 == 0
    # Another key cannot read it.
    with pytest.raises(ValueError):
        cairn.Client(server.url, server.token, system, spool_dir=spool, spool_key=os.urandom(32))
    # The right key delivers it once the server is reachable.
    c = cairn.Client(server.url, server.token, system, spool_dir=spool)
    c.flush(timeout=30)
    c.close()
    assert key
    evs = server.wait_events(system, 1)
    recs = [server.get(system, e["id"], payload=True) for e in evs]
    assert any(r["payload"].get("subject", "").startswith("Jane Roe") for r in recs)
