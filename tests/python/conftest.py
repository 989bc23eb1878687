"""Starts the real flotilla binary for the Python tests (boto3 and response-shape checks)."""
import os
import socket
import subprocess
import tempfile
import time

import boto3
import pytest

ACCESS_KEY = "AKIAPYTESTFLOTILLA01"
SECRET_KEY = "python-test-secret-for-flotilla"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def flotilla_binary():
    explicit = os.environ.get("FLOTILLA_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "debug", "flotilla")
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist: run `cargo build -p flotilla-cli` first (the README's test command does)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra_args):
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        # Task networking lives in a namespace of this server's own (as in the Rust tests), so
        # nothing it does reaches the machine's real network.
        self.netns = f"flt-py-{os.getpid()}-{self.port}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        env = dict(os.environ, FLOTILLA_ACCESS_KEY_ID=ACCESS_KEY, FLOTILLA_SECRET_ACCESS_KEY=SECRET_KEY, FLOTILLA_LOG="warn")
        self.proc = subprocess.Popen(
            [flotilla_binary(), "up", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir.name,
             "--net-namespace", f"/run/netns/{self.netns}", *extra_args],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("flotilla did not start listening")
                time.sleep(0.02)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def client(self, service="ecs"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def sim_server():
    """A server whose tasks run on simulated hosts (zones a, b, c): they reach RUNNING without
    images or root, for tests that need running tasks but not real containers."""
    s = Server("--simulated-hosts", "3")
    yield s
    s.stop()


@pytest.fixture
def no_agent_server():
    """A server with no agent: tasks stay PROVISIONING, so states that wait on an agent last."""
    s = Server("--no-agent")
    yield s
    s.stop()
