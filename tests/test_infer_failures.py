"""Inference when things go wrong: timeouts, killed workers, a dead daemon, a model replaced
while a request runs, and a batch whose outputs cannot be split."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="inference tests need torch (pip install torch==2.13.0)")

from conftest import DaemonProcess, segments_of, unique_store_name, wait_until  # noqa: E402

import shmstore  # noqa: E402
from shmstore.errors import (  # noqa: E402
    ConnectionLostError,
    ModelError,
    ShmstoreTimeoutError,
    WorkerError,
)

WORKER_START_TIMEOUT_S = 60.0


class Slow(torch.nn.Module):
    """Returns x + offset after x[0, 0] rounds of a small matrix loop (the delay knob)."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.register_buffer("weight", torch.eye(32) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rounds = int(x[0, 0].item())
        state = torch.ones(1, 32)
        for _ in range(rounds):
            state = torch.tanh(state @ self.weight + 0.1)
        return x + self.offset + 0.0 * state.sum()


class Expand(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x * 2.0, x * 3.0], 0)


def rounds_for(seconds: float) -> int:
    """Return the Slow loop rounds that take about seconds on one thread of this machine."""
    model = torch.jit.script(Slow(0.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sample = 2000
        x = torch.zeros(1, 4)
        x[0, 0] = sample
        # Timed in inference mode, as the workers run models: the loop is faster there.
        with torch.inference_mode():
            model(x)
            started = time.perf_counter()
            model(x)
            per_round = (time.perf_counter() - started) / sample
    finally:
        torch.set_num_threads(threads)
    return max(1, int(seconds / per_round))


def slow_input(rounds: int, rows: int = 1) -> np.ndarray:
    x = np.zeros((rows, 4), dtype=np.float32)
    x[0, 0] = rounds
    return x


def wait_for_workers(client: shmstore.Client, count: int) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        workers = client.get_inference_workers()
        if sum(worker["state"] == "ready" for worker in workers) >= count:
            return workers
        time.sleep(0.05)
    pytest.fail(f"{count} inference worker(s) not ready within {WORKER_START_TIMEOUT_S} s")


def run_in_thread(call: Callable[[], Any]) -> Dict[str, Any]:
    """Start call in a thread; the returned dict gets "error" or "result", and "thread"."""
    outcome: Dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:  # the test inspects whatever the call raised
            outcome["error"] = error
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    outcome["thread"] = thread
    thread.start()
    return outcome


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with one CPU worker, shared by the tests that do not kill anything."""
    name = unique_store_name("infer1")
    log_path = tmp_path_factory.mktemp("infer1") / "daemon.log"
    daemon = DaemonProcess(name, "64M", log_path, ["--workers", "1"]).start()
    with shmstore.Client(name) as client:
        wait_for_workers(client, 1)
    yield daemon
    assert daemon.stop() == 0, daemon.log_text()
    assert segments_of(name) == []


@pytest.fixture(scope="module")
def slow_rounds() -> int:
    return rounds_for(1.0)


# ---- timeouts ----------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_run_model_timeout(one_worker, slow_rounds):
    with shmstore.Client(one_worker.name) as client:
        client.set_model("slow-timeout", torch.jit.script(Slow(1.0)))
        client.put_tensor("slow-in", slow_input(2 * slow_rounds))
        client.put_tensor("fast-in", slow_input(0))

        started = time.monotonic()
        with pytest.raises(ShmstoreTimeoutError, match="did not complete within 300 ms"):
            client.run_model("slow-timeout", ["slow-in"], ["slow-out"], timeout_ms=300)
        elapsed = time.monotonic() - started

        assert 0.3 <= elapsed < 1.5
        client.run_model("slow-timeout", ["fast-in"], ["fast-out"], timeout_ms=30000)
        np.testing.assert_array_equal(client.get_tensor("fast-out"), slow_input(0) + 1)


@pytest.mark.timeout(120)
def test_timeout_from_environment(one_worker, slow_rounds):
    with shmstore.Client(one_worker.name) as client:
        client.set_model("slow-env", torch.jit.script(Slow(1.0)))
        client.put_tensor("slow-env-in", slow_input(2 * slow_rounds))
    code = textwrap.dedent("""
        import sys, time, shmstore
        client = shmstore.Client(sys.argv[1])
        started = time.monotonic()
        try:
            client.run_model("slow-env", ["slow-env-in"], ["slow-env-out"])
        except shmstore.ShmstoreTimeoutError:
            print("timeout", round(time.monotonic() - started, 3))
    """)
    environment = dict(os.environ, SHMSTORE_MODEL_TIMEOUT="400")

    result = subprocess.run([sys.executable, "-c", code, one_worker.name], capture_output=True,
                            text=True, timeout=60, env=environment)

    assert result.returncode == 0, result.stderr
    kind, seconds = result.stdout.split()
    assert kind == "timeout"
    assert 0.4 <= float(seconds) < 1.5
    # Let the worker finish the abandoned request before the next test uses it.
    time.sleep(2.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay_s", [0.5, 0.0])
def test_ctrl_c_interrupts_run_model(one_worker, slow_rounds, delay_s):
    # With no delay the signal often arrives before the wait's system call, which it then
    # cannot interrupt; the wait must still notice it within its 100 ms slices.
    with shmstore.Client(one_worker.name) as client:
        client.set_model("slow-interrupt", torch.jit.script(Slow(1.0)))
        client.put_tensor("slow-interrupt-in", slow_input(3 * slow_rounds))
    # The signal may arrive right after "running" is written, before run_model starts, so
    # the print is inside the try too.
    code = textwrap.dedent("""
        import sys, time, shmstore
        client = shmstore.Client(sys.argv[1])
        started = time.monotonic()
        try:
            print("running", flush=True)
            client.run_model("slow-interrupt", ["slow-interrupt-in"], ["slow-interrupt-out"],
                             timeout_ms=60000)
            print("completed", round(time.monotonic() - started, 3))
        except KeyboardInterrupt:
            print("interrupted", round(time.monotonic() - started, 3))
    """)
    process = subprocess.Popen([sys.executable, "-c", code, one_worker.name],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "running"
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert stdout.split()[0] == "interrupted", stdout
    assert float(stdout.split()[1]) < 2.0
    # Let the worker finish the abandoned request before the next test uses it.
    with shmstore.Client(one_worker.name) as client:
        assert wait_until(lambda: all(worker["in_flight"] == 0
                                      for worker in client.get_inference_workers()), 60)


# ---- model replacement and batches that cannot be split ---------------------------------------

@pytest.mark.timeout(120)
def test_inflight_request_keeps_old_model(one_worker, slow_rounds):
    with shmstore.Client(one_worker.name) as client:
        client.set_model("versioned", torch.jit.script(Slow(1.0)))
        x = slow_input(slow_rounds)
        client.put_tensor("versioned-slow", x)
        client.put_tensor("versioned-fast", slow_input(0))

        running = run_in_thread(lambda: client.run_model(
            "versioned", ["versioned-slow"], ["versioned-old"], timeout_ms=60000))
        assert wait_until(lambda: client.get_inference_workers()[0]["in_flight"] > 0, 10)
        client.set_model("versioned", torch.jit.script(Slow(2.0)))
        client.run_model("versioned", ["versioned-fast"], ["versioned-new"], timeout_ms=60000)
        running["thread"].join(30)

        assert "error" not in running, running.get("error")
        np.testing.assert_array_equal(client.get_tensor("versioned-old"), x + 1)
        np.testing.assert_array_equal(client.get_tensor("versioned-new"), slow_input(0) + 2)


@pytest.mark.timeout(120)
def test_expand_batched_fails_clearly(one_worker):
    with shmstore.Client(one_worker.name) as client:
        client.set_model("expand-wait", torch.jit.script(Expand()), batch_size=16,
                         min_batch_size=4, min_batch_timeout=1000)
        for number in range(4):
            client.put_tensor(f"expand-in-{number}", np.full((1, 2), number, np.float32))

        calls = [run_in_thread(lambda number=number: client.run_model(
            "expand-wait", [f"expand-in-{number}"], [f"expand-out-{number}"],
            timeout_ms=30000)) for number in range(4)]
        for call in calls:
            call["thread"].join(30)

        for call in calls:
            assert isinstance(call.get("error"), ModelError), call
            assert "cannot be split per request" in str(call["error"])
            assert "batch_size=0" in str(call["error"])

        # Alone (the batch timeout expires with one request), the full output comes back.
        client.run_model("expand-wait", ["expand-in-1"], ["expand-alone"], timeout_ms=30000)
        assert client.get_tensor("expand-alone").shape == (3, 2)


# ---- a killed worker, a dead daemon, no workers ------------------------------------------------

@pytest.mark.timeout(180)
def test_worker_killed_mid_batch(start_daemon, slow_rounds):
    daemon = start_daemon(args=["--workers", "1"])
    with shmstore.Client(daemon.name) as client:
        first_pid = wait_for_workers(client, 1)[0]["pid"]
        client.set_model("doomed", torch.jit.script(Slow(1.0)), batch_size=8,
                         min_batch_size=3, min_batch_timeout=2000)
        for number in range(3):
            client.put_tensor(f"doomed-in-{number}", slow_input(30 * slow_rounds))
        client.put_tensor("after-in", slow_input(0))

        calls = [run_in_thread(lambda number=number: client.run_model(
            "doomed", [f"doomed-in-{number}"], [f"doomed-out-{number}"], timeout_ms=60000))
            for number in range(3)]
        assert wait_until(lambda: client.get_inference_workers()[0]["in_flight"] == 3, 10)
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)
        for call in calls:
            call["thread"].join(10)

        for call in calls:
            assert isinstance(call.get("error"), WorkerError), call
            assert f"worker 0 (pid {first_pid}) died" in str(call["error"])
            assert call["finished"] - killed_at < 2.0

        client.run_model("doomed", ["after-in"], ["after-out"], timeout_ms=60000)
        np.testing.assert_array_equal(client.get_tensor("after-out"), slow_input(0) + 1)
        restarted = client.get_inference_workers()[0]
        assert restarted["pid"] != first_pid
        assert restarted["state"] == "ready"
    assert "inference worker 0 (pid %d) died with signal 9" % first_pid in daemon.log_text()


@pytest.mark.timeout(180)
def test_daemon_death_connection_lost(start_daemon, slow_rounds):
    daemon = start_daemon(args=["--workers", "1"])
    client = shmstore.Client(daemon.name)
    worker_pid = wait_for_workers(client, 1)[0]["pid"]
    client.set_model("orphan", torch.jit.script(Slow(1.0)))
    client.put_tensor("orphan-in", slow_input(30 * slow_rounds))

    call = run_in_thread(lambda: client.run_model("orphan", ["orphan-in"], ["orphan-out"],
                                                  timeout_ms=60000))
    assert wait_until(lambda: client.get_inference_workers()[0]["in_flight"] > 0, 10)
    killed_at = time.monotonic()
    daemon.kill()
    call["thread"].join(10)

    assert isinstance(call.get("error"), ConnectionLostError), call
    assert call["finished"] - killed_at < 2.0
    assert wait_until(lambda: not os.path.exists(f"/proc/{worker_pid}"), 5), \
        f"worker pid {worker_pid} outlived its daemon"
    client.close()

    # A new daemon of the same name removes the dead one's segments; the fixture stops it.
    start_daemon(name=daemon.name)


@pytest.mark.timeout(60)
def test_store_without_workers(client):
    client.put_tensor("lonely", np.ones((1, 4), np.float32))
    with pytest.raises(WorkerError, match="serve --workers N"):
        client.run_model("any-model", ["lonely"], ["out"])
