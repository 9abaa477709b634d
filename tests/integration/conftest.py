"""Fixtures for integration tests: one real local Kafka broker per test session.

``kafka_bootstrap`` is the address of the broker the tests use. With ``KAFKA_BOOTSTRAP``
set, that broker is used as is. Otherwise ``deploy/kafka/kafka-local start`` runs once per
session on a port kept for tests (``STREAMLEARN_TEST_KAFKA_PORT``, default 19092), so a
developer's own broker on 9092 is never touched. If the broker cannot be started (no Java,
no Maven, port taken, ...) every test that needs it FAILS with the script's message.

Several pytest sessions (engineers, xdist workers) may share the test broker: each holds a
lease file while it runs, and the last one to finish stops the broker, unless
``STREAMLEARN_TEST_KAFKA_KEEP=1`` asks to keep it running for fast reruns.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["kafka_bootstrap", "kafka_local"]

KAFKA_LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka-local"
DEFAULT_TEST_PORT = "19092"
# First run downloads the jars (seconds to minutes) before the script's own start timeout begins.
DOWNLOAD_ALLOWANCE_S = 600
STOP_TIMEOUT_S = 90
LOCK_TIMEOUT_S = 900
ADDRESS = re.compile(r"^[\w.\-]+:\d+$")

KafkaLocal = Callable[[str], subprocess.CompletedProcess]


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here too, so this directory also works when run on its own."""
    config.addinivalue_line("markers", "integration: needs a Kafka broker (see tests/integration/conftest.py)")


def _script_env() -> dict[str, str]:
    """The environment for kafka-local: the test port, and none of a developer's own broker settings."""
    env = dict(os.environ)
    for name in ("KAFKA_STATE_DIR", "KAFKA_CONTROLLER_PORT"):
        env.pop(name, None)
    env["KAFKA_PORT"] = os.environ.get("STREAMLEARN_TEST_KAFKA_PORT", DEFAULT_TEST_PORT)
    return env


def _lease_dir(env: dict[str, str]) -> Path:
    cache = Path(env.get("STREAMLEARN_CACHE") or Path.home() / ".cache" / "streamlearn")
    return cache / f"kafka-test-leases-{env['KAFKA_PORT']}"


@contextmanager
def _locked(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on *path*, so lease changes and start/stop never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"gave up after {timeout_s:.0f} s waiting for the test-broker lock {path}")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _other_live_leases(lease_dir: Path) -> list[int]:
    """Pids of other sessions still using the broker; leases of dead sessions are removed."""
    live = []
    for lease in lease_dir.glob("*.lease"):
        try:
            pid = int(lease.stem)
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            live.append(pid)
        elif pid != os.getpid():
            lease.unlink(missing_ok=True)
    return live


def _run(env: dict[str, str], command: str, timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(KAFKA_LOCAL), command], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"kafka-local {command} did not finish within {timeout_s:.0f} s; stderr: {exc.stderr!r}")


def _start_timeout(env: dict[str, str]) -> float:
    return float(env.get("KAFKA_START_TIMEOUT") or 90) + DOWNLOAD_ALLOWANCE_S


@pytest.fixture(scope="session")
def kafka_local() -> KafkaLocal | None:
    """Run ``kafka-local <command>`` against the test broker; None when KAFKA_BOOTSTRAP names another broker."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return None
    env = _script_env()

    def run(command: str) -> subprocess.CompletedProcess:
        return _run(env, command, _start_timeout(env) if command == "start" else STOP_TIMEOUT_S)

    return run


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address ``host:port`` of a running broker: KAFKA_BOOTSTRAP, or the local test broker."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    env = _script_env()
    lease_dir = _lease_dir(env)
    lock = lease_dir / ".lock"
    lease = lease_dir / f"{os.getpid()}.lease"
    with _locked(lock):
        lease.write_text(f"{os.getpid()}\n")
        result = _run(env, "start", _start_timeout(env))
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines or not ADDRESS.match(lines[-1]):
            lease.unlink(missing_ok=True)
            pytest.fail(
                f"could not start the test Kafka broker with {KAFKA_LOCAL} start "
                f"(exit {result.returncode}, KAFKA_PORT={env['KAFKA_PORT']}):\n{result.stderr.strip()}\n"
                "Fix the cause above, or set KAFKA_BOOTSTRAP to a running broker.",
                pytrace=False,
            )
    try:
        yield lines[-1]
    finally:
        with _locked(lock):
            lease.unlink(missing_ok=True)
            keep = os.environ.get("STREAMLEARN_TEST_KAFKA_KEEP") == "1"
            if not keep and not _other_live_leases(lease_dir):
                stopped = _run(env, "stop", STOP_TIMEOUT_S)
                if stopped.returncode != 0:
                    pytest.fail(f"kafka-local stop failed (exit {stopped.returncode}): {stopped.stderr.strip()}")
