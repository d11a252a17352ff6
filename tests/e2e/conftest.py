"""Fixtures for the end-to-end tests: the three services as real OS processes, driven over HTTP.

Each service runs as ``python -m services.<name>`` in its own process group, on a free port, against
the test databases and the test's own Kafka topics, with its stdout and stderr in a log file under
`tmp_path` (the e2e tests read those files to check that no personal data is logged).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_TOKEN, KAFKA

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "profile", "segmentation")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Variables the services read: never inherit them from the developer's shell.
SERVICE_ENV_PREFIXES = ("CLIENTELA_", *(f"{s.upper()}_" for s in SERVICES))


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel says are free now (never 8001-8003, so `make run` can run alongside)."""
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:  # all held open at once, so the kernel cannot hand out one port twice
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(no log file)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServiceProcess:
    """One service as a process; `start` may be called again after `kill` (same env, port and log)."""

    def __init__(
        self,
        name: str,
        *,
        port: int,
        env: Mapping[str, str],
        log_path: Path,
        module: str | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        """`module`: what to run (default ``services.<name>``: the API with its workers); `ready_path`:
        what answers 200 on `port` once it is up (a consumer process alone: its `/metrics`)."""
        self.name = name
        self.port = port
        self.env = dict(env)
        self.log_path = log_path
        self.module = module or f"services.{name}"
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach it and only it
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait for GET `ready_path` == 200; fail with the end of the service's log otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    pytest.fail(
                        f"{self.name} exited with code {code} before it was ready; "
                        f"log {self.log_path}:\n{tail(self.log_path)}"
                    )
                try:
                    response = client.get(self.ready_path)
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text}"
                except httpx.TransportError as exc:
                    last = type(exc).__name__
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{self.name} not ready after {timeout:.0f} s (last: {last}); "
                        f"log {self.log_path}:\n{tail(self.log_path)}"
                    )
                time.sleep(0.2)

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while the leader is not reaped: afterwards its pid (the group id) may belong to another.
        assert self.process is not None
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no offset commits, no flushes: a crash."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in `timeout`."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()


class ServiceStack:
    """The three services as processes: base URLs, crash and restart of one, logs of all."""

    def __init__(self, services: Mapping[str, ServiceProcess]) -> None:
        self.services = dict(services)

    @property
    def ingest_url(self) -> str:
        return self.services["ingest"].url

    @property
    def profile_url(self) -> str:
        return self.services["profile"].url

    @property
    def segmentation_url(self) -> str:
        return self.services["segmentation"].url

    def kill(self, name: str) -> None:
        """Crash one service (SIGKILL to its process group)."""
        self.services[name].kill()

    def start(self, name: str, *, wait: bool = True) -> None:
        """(Re)start one service with the same env, port and log file (appended to)."""
        self.services[name].start()
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        self.services[name].wait_ready()

    def start_all(self) -> None:
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            service.wait_ready()

    def stop_all(self) -> None:
        for service in self.services.values():
            service.stop()

    def logs(self) -> dict[str, str]:
        return {
            name: service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
            for name, service in self.services.items()
        }


def service_env(service: str, *, database_url: str, port: int, common: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
    prefix = service.upper()
    env.update(common)
    env.update(
        {
            f"{prefix}_DATABASE_URL": database_url,
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def service_env_overrides() -> dict[str, str]:
    """Variables set for every service on top of the defaults below (`CLIENTELA_LOG_LEVEL`, a service's
    own ``SEGMENTATION_*`` settings, ...); a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
def services(
    clean_databases: dict[str, str],
    topic_prefix: str,
    tmp_path: Path,
    service_env_overrides: dict[str, str],
) -> Iterator[ServiceStack]:
    """The three services running as processes on free ports; all stopped at teardown."""
    common = {
        "CLIENTELA_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "CLIENTELA_TOPIC_PREFIX": topic_prefix,
        "CLIENTELA_CONSUMER_GROUP_PREFIX": f"e2e-{uuid.uuid4().hex[:10]}",
        "CLIENTELA_ADMIN_TOKEN": ADMIN_TOKEN,
        "CLIENTELA_RUN_MIGRATIONS": "true",  # already at head: exercises the startup path, changes nothing
        "CLIENTELA_LOG_LEVEL": "INFO",
        **service_env_overrides,
    }
    stack = ServiceStack(
        {
            name: ServiceProcess(
                name,
                port=port,
                env=service_env(name, database_url=clean_databases[name], port=port, common=common),
                log_path=tmp_path / f"{name}.log",
            )
            for name, port in zip(SERVICES, free_ports(len(SERVICES)), strict=True)
        }
    )
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()
