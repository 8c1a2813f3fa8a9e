"""Inference through a real daemon with two CPU workers: results, concurrency, errors,
scripts, infer(), statistics and the C API.

One daemon serves the whole module, because each worker spends a few seconds importing torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="inference tests need torch (pip install torch==2.13.0)")

from conftest import DaemonProcess, segments_of, unique_store_name  # noqa: E402

import shmstore  # noqa: E402
from shmstore.errors import KeyNotFoundError, ModelError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 60.0


def eke_model_path() -> Path:
    """Return the ML-EKE TorchScript file: $SHMSTORE_EKE_MODEL, else the shared copy."""
    configured = os.environ.get("SHMSTORE_EKE_MODEL")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared/models/ncar_ml_eke.pt"


# ---- test models ---------------------------------------------------------------------------

class RowModel(torch.nn.Module):
    """A batchable model: every output row depends only on its input row, (N, 4) -> (N, 3)."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.register_buffer("weight", torch.randn(4, 3, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight) + 0.5


class TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        return x + 1.0, x * 2.0


class RaisesOnNegative(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise RuntimeError("negative inputs are not allowed")
        return x.sqrt()


class Expand(torch.nn.Module):
    """Maps (1, d) to (3, d): its first output dimension does not follow the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x * 2.0, x * 3.0], 0)


class AtMostRows(torch.nn.Module):
    """RowModel's rows plus x * 2, and an error when called with more than limit rows."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.rows = RowModel()

    def forward(self, x: torch.Tensor):
        if x.shape[0] > self.limit:
            raise RuntimeError("called with more rows than the limit")
        return self.rows(x), x * 2.0


class WeightedSum(torch.nn.Module):
    """Two inputs that share their rows: (N, 4) and (N, 1) -> (N, 4), and the batch size."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor):
        return x * weight, torch.tensor(x.shape[0])


class WeightedRows(torch.nn.Module):
    """x * weight for (N, 4) and (N, 1) inputs, and an error above 4 rows."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4:
            raise RuntimeError("called with more than 4 rows")
        return x * weight


class Twice(torch.nn.Module):
    """x * 2, row by row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


class DoublesInPlace(torch.nn.Module):
    """Writes into its input, then returns twice its rows: it cannot run in chunks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1.0)
        return torch.cat([x, x], 0)


SCRIPT = textwrap.dedent("""
    def scale(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return x * factor

    def split(x: torch.Tensor):
        return x[:, :2], x[:, 2:]
""")


# ---- fixtures ----------------------------------------------------------------------------------

def wait_for_workers(client: shmstore.Client, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = client.get_inference_workers()
        if sum(worker["state"] == "ready" for worker in workers) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{count} inference workers not ready within {timeout_s} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with two CPU workers, shared by this module; checks its clean stop."""
    name = unique_store_name("infer")
    log_path = tmp_path_factory.mktemp("infer") / "daemon.log"
    daemon = DaemonProcess(name, "256M", log_path, ["--workers", "2"]).start()
    with shmstore.Client(name) as client:
        wait_for_workers(client, 2, WORKER_START_TIMEOUT_S)
        worker_pids = [worker["pid"] for worker in client.get_inference_workers()]

    yield daemon

    assert daemon.stop() == 0, daemon.log_text()
    assert segments_of(name) == []
    for pid in worker_pids:
        assert not os.path.exists(f"/proc/{pid}"), f"worker pid {pid} outlived the daemon"


@pytest.fixture
def client(served: DaemonProcess) -> Iterator[shmstore.Client]:
    with shmstore.Client(served.name) as connected:
        yield connected


def run_clients(code: str, store: str, count: int, seed: int, timeout: float = 120.0,
                extra_args: tuple = ()) -> list:
    """Run code in count client processes at once; each prints one JSON line. Return them.

    Client number n gets the arguments: store, seed + n, n, *extra_args.
    """
    processes = [
        subprocess.Popen([sys.executable, "-c", code, store, str(seed + number), str(number),
                          *extra_args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for number in range(count)
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        assert process.returncode == 0, f"client process failed:\n{stderr}"
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


# ---- results -----------------------------------------------------------------------------------

# Client processes import numpy and shmstore only, because torch takes seconds to import. They
# send their outputs back, and the test compares them with the model run directly.
EKE_CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import shmstore

    store, seed, number = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(seed)
    client = shmstore.Client(store)
    outputs = []
    for rows in (1, 7, 64, 4096):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        client.put_tensor(f"eke-in-{number}", x)
        client.run_model("eke", [f"eke-in-{number}"], [f"eke-out-{number}"])
        outputs.append(client.get_tensor(f"eke-out-{number}").tolist())
    print(json.dumps({"outputs": outputs}))
""")


@pytest.mark.timeout(240)
def test_eke_matches_direct_call(client, served, seed):
    path = eke_model_path()
    if not path.is_file():
        pytest.skip(f"ML-EKE model not found at {path}; set SHMSTORE_EKE_MODEL")
    client.set_model_from_file("eke", path, batch_size=8192)
    reference = torch.jit.load(str(path))

    results = run_clients(EKE_CLIENT, served.name, count=3, seed=seed)

    for number, result in enumerate(results):
        rng = np.random.default_rng(seed + number)
        for rows, output in zip((1, 7, 64, 4096), result["outputs"]):
            x = rng.standard_normal((rows, 4)).astype(np.float32)
            with torch.no_grad():
                expected = reference(torch.from_numpy(x)).numpy()
            got = np.asarray(output, dtype=np.float32)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


ROW_REQUESTS = 40

ROW_CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import shmstore

    store, seed, number = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(seed)
    client = shmstore.Client(store)
    outputs = []
    for request in range(int(sys.argv[4])):
        rows = int(rng.integers(1, 17))
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        client.put_tensor(f"rows-in-{number}", x)
        client.run_model("rows", [f"rows-in-{number}"], [f"rows-out-{number}"])
        outputs.append(client.get_tensor(f"rows-out-{number}").tolist())
    print(json.dumps({"outputs": outputs}))
""")


@pytest.mark.timeout(240)
def test_batched_rows_match_alone(client, served, seed):
    model = torch.jit.script(RowModel())
    client.set_model("rows", model, batch_size=64, min_batch_size=8, min_batch_timeout=2)
    before = client.get_model_stats("rows")["requests"]

    results = run_clients(ROW_CLIENT, served.name, count=8, seed=seed,
                          extra_args=[str(ROW_REQUESTS)])

    # Each response equals the model run on that request alone. The checksums of all
    # responses and of all direct runs agree, with the inputs drawn again from the same seeds.
    got_checksum = 0.0
    expected_checksum = 0.0
    for number, result in enumerate(results):
        rng = np.random.default_rng(seed + number)
        assert len(result["outputs"]) == ROW_REQUESTS
        for output in result["outputs"]:
            rows = int(rng.integers(1, 17))
            x = rng.standard_normal((rows, 4)).astype(np.float32)
            with torch.no_grad():
                alone = model(torch.from_numpy(x)).numpy()
            got = np.asarray(output, dtype=np.float32)
            assert got.shape == (rows, 3)
            np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
            got_checksum += float(got.astype(np.float64).sum())
            expected_checksum += float(alone.astype(np.float64).sum())
    assert got_checksum == pytest.approx(expected_checksum, rel=1e-6, abs=1e-4)

    deadline = time.monotonic() + 5
    stats = client.get_model_stats("rows")
    while stats["requests"] < before + 8 * ROW_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = client.get_model_stats("rows")
    assert stats["requests"] - before == 8 * ROW_REQUESTS
    assert stats["errors"] == 0
    assert stats["max_batch_size"] <= 64


@pytest.mark.timeout(60)
def test_infer_returns_arrays(client):
    client.set_model("two", torch.jit.script(TwoOutputs()))
    x = np.arange(6, dtype=np.float32).reshape(3, 2)

    first, second = client.infer("two", x)

    np.testing.assert_array_equal(first, x + 1)
    np.testing.assert_array_equal(second, x * 2)
    assert not [key for key in client.keys() if key.startswith("__shmstore__/tmp/")]


@pytest.mark.timeout(60)
def test_bfloat16_tensors_pass_through(client):
    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0

    client.set_model("double", torch.jit.script(Double()), batch_size=8)
    x = torch.arange(6, dtype=torch.float32).reshape(3, 2).to(torch.bfloat16)
    client.put_tensor("bf16-in", x)

    client.run_model("double", ["bf16-in"], ["bf16-out"])

    got = client.get_tensor("bf16-out", framework="torch")
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, x * 2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch_size", [0, 8])
def test_fortran_order_input_reaches_model_in_c_order(client, batch_size):
    class Flatten(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], -1) * 2.0

    client.set_model(f"flatten-{batch_size}", torch.jit.script(Flatten()),
                     batch_size=batch_size)
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 2, 3))
    client.put_tensor("fortran-in", x)

    client.run_model(f"flatten-{batch_size}", ["fortran-in"], ["flat-out"])

    np.testing.assert_array_equal(client.get_tensor("flat-out"), x.reshape(4, 6) * 2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["C order", "Fortran order", "mixed order", "bfloat16"])
def test_batch_inputs_stack_rows(client, kind):
    from shmstore.inference.batcher import PendingRequest
    from shmstore.inference.worker import Worker

    values = [torch.arange(6, dtype=torch.float32).reshape(3, 2) + 10 * number
              for number in range(2)]
    for number, value in enumerate(values):
        if kind == "Fortran order" or (kind == "mixed order" and number == 1):
            client.put_tensor(f"stack{number}", np.asfortranarray(value.numpy()))
        elif kind == "bfloat16":
            client.put_tensor(f"stack{number}", value.to(torch.bfloat16))
        else:
            client.put_tensor(f"stack{number}", value.numpy())
    batch = []
    for number in range(2):
        views, rows, _layout = client._core.get_views([f"stack{number}"])
        batch.append(PendingRequest(number, 1, 0, 0, 0, "m", "", [f"stack{number}"], ["y"],
                                    0, tensors=views, rows=rows))

    (stacked,) = Worker._batch_inputs(batch, torch.device("cpu"))

    expected = torch.cat(values)
    if kind == "bfloat16":
        expected = expected.to(torch.bfloat16)
    assert torch.equal(stacked, expected)
    assert stacked.is_contiguous()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch_size", [0, 8])
def test_zero_row_request(client, batch_size):
    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0

    client.set_model(f"double-{batch_size}", torch.jit.script(Double()), batch_size=batch_size)
    client.put_tensor("empty-in", np.zeros((0, 3), np.float32))

    client.run_model(f"double-{batch_size}", ["empty-in"], ["empty-out"])

    assert client.get_tensor("empty-out").shape == (0, 3)


@pytest.mark.timeout(60)
def test_batch_inputs_stack_zero_rows(client):
    from shmstore.inference.batcher import PendingRequest
    from shmstore.inference.worker import Worker

    client.put_tensor("none", np.zeros((0, 2), np.float32))
    client.put_tensor("some", np.ones((2, 2), np.float32))
    batch = []
    for number, key in enumerate(["none", "some", "none"]):
        views, rows, _layout = client._core.get_views([key])
        batch.append(PendingRequest(number, 1, 0, 0, 0, "m", "", [key], ["y"], 0,
                                    tensors=views, rows=rows))

    (stacked,) = Worker._batch_inputs(batch, torch.device("cpu"))

    assert torch.equal(stacked, torch.ones(2, 2))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["input", "output"])
def test_overlong_tensor_key_rejected(client, which):
    client.set_model("double-keys", torch.jit.script(Twice()), batch_size=8)
    client.put_tensor("short-in", np.ones((1, 2), np.float32))
    long_key = "k" * (shmstore._core.KEY_MAX + 1)
    inputs = [long_key] if which == "input" else ["short-in"]
    outputs = [long_key] if which == "output" else ["short-out"]

    with pytest.raises(shmstore.InvalidKeyError, match=f"invalid {which} key 0"):
        client.run_model("double-keys", inputs, outputs)

    client.run_model("double-keys", ["short-in"], ["short-out"])
    np.testing.assert_array_equal(client.get_tensor("short-out"), np.full((1, 2), 2.0))


@pytest.mark.timeout(60)
def test_unstorable_output_dtype_fails_alone(client):
    class Complex32(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x < 0).any()):
                return x.to(torch.complex32)
            return x * 2.0

    # The two requests wait up to 500 ms for each other, so they usually share a batch.
    client.set_model("complex32", torch.jit.script(Complex32()), batch_size=8,
                     min_batch_size=2, min_batch_timeout=500)
    client.put_tensor("c32-bad", np.full((1, 2), -1.0, np.float32))
    client.put_tensor("c32-good", np.ones((1, 2), np.float32))
    errors = {}

    def run(name):
        try:
            client.run_model("complex32", [f"c32-{name}"], [f"c32-out-{name}"])
        except shmstore.ShmstoreError as error:
            errors[name] = error

    threads = [threading.Thread(target=run, args=(name,)) for name in ("bad", "good")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert isinstance(errors.get("bad"), shmstore.ModelError)
    assert "complex32" in str(errors["bad"])
    assert "good" not in errors
    np.testing.assert_array_equal(client.get_tensor("c32-out-good"), np.full((1, 2), 2.0))


@pytest.mark.timeout(60)
def test_model_replacement_switches(client):
    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1.0

    class AddTwo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 2.0

    x = np.zeros((2, 2), dtype=np.float32)
    client.put_tensor("swap-in", x)

    client.set_model("swap", torch.jit.script(AddOne()))
    client.run_model("swap", ["swap-in"], ["swap-out"])
    np.testing.assert_array_equal(client.get_tensor("swap-out"), x + 1)

    client.set_model("swap", torch.jit.script(AddTwo()))
    for _ in range(4):  # both workers must switch
        client.run_model("swap", ["swap-in"], ["swap-out"])
        np.testing.assert_array_equal(client.get_tensor("swap-out"), x + 2)


@pytest.mark.timeout(60)
def test_model_storage_calls(client):
    model = torch.jit.script(RowModel())
    client.set_model("stored", model, device="cpu", batch_size=32, min_batch_size=4,
                     min_batch_timeout=3, tag="v7")

    assert client.model_exists("stored")
    assert client.poll_model("stored", 10, 1)
    settings = client.get_model_settings("stored")
    assert settings["device"] == "CPU"
    assert (settings["batch_size"], settings["min_batch_size"],
            settings["min_batch_timeout"]) == (32, 4, 3)
    assert settings["tag"] == "v7"
    assert "stored" not in client.keys()
    assert not [key for key in client.keys() if key.startswith("__shmstore__/")]
    assert "__shmstore__/model/stored" in client.keys("__shmstore__/model/*")
    loaded = torch.jit.load(__import__("io").BytesIO(client.get_model("stored")))
    x = torch.ones(2, 4)
    assert torch.equal(loaded(x), model(x))

    with pytest.raises(shmstore.errors.InvalidArgumentError, match="invalid device"):
        client.set_model("stored-bad", model, device="TPU")
    with pytest.raises(ValueError, match="min_batch_size=4 exceeds batch_size=2"):
        client.set_model("stored-bad", model, batch_size=2, min_batch_size=4)

    client.delete_model("stored")
    assert not client.model_exists("stored")
    with pytest.raises(KeyNotFoundError):
        client.get_model("stored")


@pytest.mark.timeout(60)
def test_script_functions(client):
    client.set_script("prep", SCRIPT)
    client.put_tensor("script-x", np.arange(8, dtype=np.float32).reshape(2, 4))
    client.put_tensor("script-factor", np.array(3.0, dtype=np.float32))

    client.run_script("prep", "scale", ["script-x", "script-factor"], ["script-scaled"])
    client.run_script("prep", "split", ["script-x"], ["script-left", "script-right"])

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(client.get_tensor("script-scaled"), x * 3)
    np.testing.assert_array_equal(client.get_tensor("script-left"), x[:, :2])
    np.testing.assert_array_equal(client.get_tensor("script-right"), x[:, 2:])
    assert client.get_script("prep") == SCRIPT
    with pytest.raises(ModelError, match="no function 'missing'"):
        client.run_script("prep", "missing", ["script-x"], ["script-y"])


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_errors_per_request(client):
    client.set_model("rows-err", torch.jit.script(RowModel()), batch_size=16)
    client.set_model("raises", torch.jit.script(RaisesOnNegative()))
    client.set_model("two-err", torch.jit.script(TwoOutputs()))
    client.put_tensor("good", np.ones((2, 4), dtype=np.float32))
    client.put_tensor("as-double", np.ones((2, 4), dtype=np.float64))
    client.put_tensor("wide", np.ones((2, 5), dtype=np.float32))
    client.put_tensor("negative", -np.ones((2, 4), dtype=np.float32))

    with pytest.raises(KeyNotFoundError, match="model 'absent' not found"):
        client.run_model("absent", ["good"], ["out"])
    with pytest.raises(KeyNotFoundError, match="input tensor 'missing-input'"):
        client.run_model("rows-err", ["missing-input"], ["out"])
    with pytest.raises(ModelError, match="expected .*Double.*|.*dtype"):
        client.run_model("rows-err", ["as-double"], ["out"])
    with pytest.raises(ModelError, match="cannot be multiplied|shapes"):
        client.run_model("rows-err", ["wide"], ["out"])
    with pytest.raises(ModelError, match="negative inputs are not allowed"):
        client.run_model("raises", ["negative"], ["out"])
    with pytest.raises(ModelError, match="returned 2 output.*names 3 output key"):
        client.run_model("two-err", ["good"], ["out-a", "out-b", "out-c"])

    client.run_model("rows-err", ["good"], ["out"])
    assert client.get_tensor("out").shape == (2, 3)


@pytest.mark.timeout(60)
def test_gpu_model_without_gpu(client):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so a GPU model runs")
    client.set_model("on-gpu", torch.jit.script(RowModel()), device="GPU")
    client.put_tensor("gpu-in", np.ones((1, 4), dtype=np.float32))

    with pytest.raises(ModelError, match="set for device GPU, but this worker sees no GPU"):
        client.run_model("on-gpu", ["gpu-in"], ["gpu-out"])


@pytest.mark.timeout(60)
def test_two_outputs_one_key_fails_fast(client):
    client.set_model("two-one", torch.jit.script(TwoOutputs()), batch_size=8)
    client.put_tensor("two-one-in", np.ones((1, 2), dtype=np.float32))
    client.run_model("two-one", ["two-one-in"], ["warm-a", "warm-b"])

    started = time.monotonic()
    with pytest.raises(ModelError, match="returned 2 output.*names 1 output key"):
        client.run_model("two-one", ["two-one-in"], ["only"])
    assert time.monotonic() - started < 2.0

    client.run_model("two-one", ["two-one-in"], ["next-a", "next-b"])
    np.testing.assert_array_equal(client.get_tensor("next-b"), np.full((1, 2), 2.0))


@pytest.mark.timeout(60)
def test_expand_alone_returns_full(client):
    client.set_model("expand", torch.jit.script(Expand()), batch_size=16)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    client.put_tensor("expand-in", x)

    client.run_model("expand", ["expand-in"], ["expand-out"])

    got = client.get_tensor("expand-out")
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, np.concatenate([x, 2 * x, 3 * x]))


# ---- requests larger than batch_size -----------------------------------------------------------

@pytest.mark.timeout(60)
def test_large_request_runs_in_chunks(client, seed):
    client.set_model("chunked", torch.jit.script(AtMostRows(8)), batch_size=8)
    x = np.random.default_rng(seed).standard_normal((21, 4)).astype(np.float32)
    client.put_tensor("chunked-in", x)

    client.run_model("chunked", ["chunked-in"], ["chunked-rows", "chunked-double"])

    with torch.no_grad():
        expected = RowModel()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(client.get_tensor("chunked-rows"), expected, rtol=1e-6)
    np.testing.assert_array_equal(client.get_tensor("chunked-double"), 2 * x)


@pytest.mark.timeout(60)
def test_unsplittable_request_runs_whole(client):
    client.set_model("in-place", torch.jit.script(DoublesInPlace()), batch_size=4)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    client.put_tensor("in-place-in", x)

    client.run_model("in-place", ["in-place-in"], ["in-place-out"])

    got = client.get_tensor("in-place-out")
    assert got.shape == (20, 4)
    np.testing.assert_array_equal(got, np.concatenate([x + 1, x + 1]))
    np.testing.assert_array_equal(client.get_tensor("in-place-in"), x)


@pytest.mark.timeout(60)
def test_two_input_request_runs_in_chunks(client, seed):
    client.set_model("weighted-rows", torch.jit.script(WeightedRows()), batch_size=4)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    weight = rng.standard_normal((10, 1)).astype(np.float32)
    client.put_tensor("weighted-rows-x", x)
    client.put_tensor("weighted-rows-w", weight)

    client.run_model("weighted-rows", ["weighted-rows-x", "weighted-rows-w"],
                     ["weighted-rows-out"])

    np.testing.assert_allclose(client.get_tensor("weighted-rows-out"), x * weight, rtol=1e-6)


@pytest.mark.timeout(60)
def test_two_input_chunks_and_scalar_output(client, seed):
    # The scalar output cannot follow the chunks' rows, so the request runs whole.
    client.set_model("weighted", torch.jit.script(WeightedSum()), batch_size=4)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    weight = rng.standard_normal((10, 1)).astype(np.float32)
    client.put_tensor("weighted-x", x)
    client.put_tensor("weighted-w", weight)

    client.run_model("weighted", ["weighted-x", "weighted-w"], ["weighted-out", "weighted-n"])

    np.testing.assert_allclose(client.get_tensor("weighted-out"), x * weight, rtol=1e-6)
    assert int(client.get_tensor("weighted-n")) == 10


@pytest.mark.timeout(120)
def test_eke_in_chunks_matches_direct_call(client, seed):
    path = eke_model_path()
    if not path.is_file():
        pytest.skip(f"ML-EKE model not found at {path}; set SHMSTORE_EKE_MODEL")
    client.set_model_from_file("eke-chunks", path, batch_size=1000)
    x = np.random.default_rng(seed).standard_normal((4096, 4)).astype(np.float32)
    client.put_tensor("eke-chunks-in", x)

    client.run_model("eke-chunks", ["eke-chunks-in"], ["eke-chunks-out"])

    with torch.no_grad():
        expected = torch.jit.load(str(path))(torch.from_numpy(x.copy())).numpy()
    got = client.get_tensor("eke-chunks-out")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---- statistics, status and the C API ----------------------------------------------------------

@pytest.mark.timeout(60)
def test_stats_and_status(client, served):
    client.set_model("counted", torch.jit.script(RowModel()), batch_size=32)
    client.put_tensor("counted-in", np.ones((5, 4), dtype=np.float32))
    for _ in range(6):
        client.run_model("counted", ["counted-in"], ["counted-out"])

    deadline = time.monotonic() + 5
    stats = client.get_model_stats("counted")
    while stats["requests"] < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = client.get_model_stats("counted")

    assert stats["requests"] == 6
    assert stats["errors"] == 0
    assert stats["samples"] == 30
    assert stats["batches"] == 6
    assert stats["compute_ms_median"] is not None
    assert stats["queue_wait_ms_p99"] is not None
    with pytest.raises(KeyNotFoundError):
        client.get_model_stats("never-stored")

    status = subprocess.run([sys.executable, "-m", "shmstore", "status", "--name", served.name],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "inference: 2 worker(s)" in status.stdout
    assert "counted" in status.stdout


C_PROGRAM = textwrap.dedent(r"""
    #include <stdio.h>
    #include <string.h>
    #include <shmstore.h>

    int main(int argc, char **argv)
    {
        shmstore_client_t *client = NULL;
        int rc = shmstore_connect(argv[1], &client);
        if (rc != 0) { printf("connect %s\n", shmstore_error_detail()); return 1; }
        rc = shmstore_set_model_from_file(client, "c-model", argv[2], "TORCH", "CPU", 16, 0, 0);
        if (rc != 0) { printf("set %s\n", shmstore_error_detail()); return 1; }
        if (shmstore_model_exists(client, "c-model") != 1) { printf("exists\n"); return 1; }

        float x[2][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}};
        int64_t dims[2] = {2, 4};
        rc = shmstore_put(client, "c-in", x, SHMSTORE_FLOAT32, 2, dims, SHMSTORE_ORDER_C);
        if (rc != 0) { printf("put %s\n", shmstore_error_detail()); return 1; }
        const char *inputs[] = {"c-in"};
        const char *outputs[] = {"c-out"};
        rc = shmstore_run_model(client, "c-model", 1, inputs, 1, outputs, 30000);
        if (rc != 0) { printf("run %d %s\n", rc, shmstore_error_detail()); return 1; }
        rc = shmstore_run_model(client, "absent-model", 1, inputs, 1, outputs, 30000);
        printf("absent %d %s\n", rc, shmstore_error_detail());
        shmstore_disconnect(client);
        return 0;
    }
""")


@pytest.mark.timeout(120)
def test_c_api_runs_model(client, served, tmp_path):
    model_path = tmp_path / "rows.pt"
    torch.jit.script(RowModel()).save(str(model_path))
    source = tmp_path / "run_model.c"
    source.write_text(C_PROGRAM)
    program = tmp_path / "run_model"
    flags = subprocess.run([sys.executable, "-m", "shmstore", "config", "--cflags", "--libs"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["gcc", "-std=c11", str(source), "-o", str(program), *flags], check=True)

    result = subprocess.run([str(program), served.name, str(model_path)], capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"absent {shmstore.errors.SHMSTORE_ENOKEY} " in result.stdout
    assert "model 'absent-model' not found" in result.stdout
    x = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    with torch.no_grad():
        expected = RowModel()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(client.get_tensor("c-out"), expected, rtol=1e-5)


def process_cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process pid, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), utime and stime, follow the command name at 12 and 13.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(120)
def test_workers_idle_after_burst(client):
    client.set_model("idle-rows", torch.jit.script(RowModel()), batch_size=0)
    client.put_tensor("idle-in", np.ones((2, 4), dtype=np.float32))
    for _ in range(200):
        client.run_model("idle-rows", ["idle-in"], ["idle-out"])
    # The statistics publication after the burst and the worker's spin end well within this.
    time.sleep(0.5)

    pids = [worker["pid"] for worker in client.get_inference_workers()
            if worker["state"] == "ready"]
    before = {pid: process_cpu_seconds(pid) for pid in pids}
    time.sleep(2.0)
    used = {pid: process_cpu_seconds(pid) - before[pid] for pid in pids}

    for pid in pids:
        assert used[pid] < 0.1, f"idle worker {pid} used {used[pid]:.2f} s CPU in 2 s"


@pytest.mark.timeout(120)
def test_requests_after_idle_never_stall(client):
    # Clients skip the worker doorbell while a worker polls the queue. A request left
    # without a ring waits for a sleeping worker's 100 ms time-out instead.
    client.set_model("stall-rows", torch.jit.script(RowModel()), batch_size=0)
    client.put_tensor("stall-in", np.ones((2, 4), dtype=np.float32))
    for _ in range(20):
        client.run_model("stall-rows", ["stall-in"], ["stall-out"])

    first_latencies = []
    for _ in range(20):
        # Long enough for both workers to publish statistics and sleep for long.
        time.sleep(0.15)
        began = time.monotonic()
        client.run_model("stall-rows", ["stall-in"], ["stall-out"])
        first_latencies.append(time.monotonic() - began)
        # A burst right after, so that tickets arrive while a worker polls.
        for _ in range(20):
            client.run_model("stall-rows", ["stall-in"], ["stall-out"])

    slow = [round(latency * 1e3) for latency in first_latencies if latency >= 0.04]
    assert len(slow) <= 3, f"{len(slow)} of 20 requests after an idle pause took {slow} ms"
