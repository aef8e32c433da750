"""Fixtures: a real `cairn serve` built from this repository (CAIRN_BIN, or `go build` when unset)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture(scope="session")
def cairn_bin(tmp_path_factory):
    b = os.environ.get("CAIRN_BIN")
    if b:
        return b
    b = str(tmp_path_factory.mktemp("bin") / "cairn")
    subprocess.run(["go", "build", "-o", b, "./cmd/cairn"], cwd=REPO, check=True)
    return b


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """A `cairn serve` subprocess on a fixed port, so it can be killed and restarted on the same address."""

    def __init__(self, binary, data):
        self.binary, self.data, self.port = binary, data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.start()
        with open(os.path.join(data, "admin.token")) as f:
            self.token = f.read().strip()

    def start(self):
        self.proc = subprocess.Popen([self.binary, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
                                      "--origin", "sdk.test/cairn", "--checkpoint-interval", "5ms"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            if line.startswith("cairn serving on"):
                break
        else:
            raise RuntimeError("cairn serve did not start")
        # Drain the rest of its output in the background so it never blocks on a full pipe.
        import threading

        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def request(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method, data=body.encode() if body else None,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def register(self, system):
        self.request("POST", "/v1/systems", json.dumps({"id": system, "name": system, "intended_purpose": "testing",
                                                        "provider": "Acme"}))

    def events(self, system, type_=None):
        """The system's events as the query index has them (it follows the log within milliseconds)."""
        q = f"/v1/systems/{system}/events?limit=1000" + (f"&type={type_}" if type_ else "")
        return self.request("GET", q)["events"]

    def wait_events(self, system, n, type_="inference"):
        for _ in range(400):
            evs = self.events(system, type_)
            if len(evs) >= n:
                return evs
            time.sleep(0.025)
        return self.events(system, type_)

    def get(self, system, ref, payload=False):
        return self.request("GET", f"/v1/systems/{system}/events/{ref}" + ("?payload=true" if payload else ""))


@pytest.fixture
def server(cairn_bin, tmp_path):
    s = Server(cairn_bin, str(tmp_path / "data"))
    yield s
    s.stop()


_n = [0]


@pytest.fixture
def system(server):
    _n[0] += 1
    name = f"sys-{_n[0]}"
    server.register(name)
    return name
