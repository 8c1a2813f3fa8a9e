"""Measure the ML-EKE model through the inference service against the model called directly.

Run from the repository root, after `pip install -e .` and `pip install torch==2.13.0`:

    python -m bench.bench_infer                 # 18 cases of 2 s, about 2 minutes on 2 cores
    python -m bench.bench_infer --rounds 3      # every case three times, bars summarised
    python -m bench.bench_infer --duration 0.5  # a quick check that every case runs
    python -m bench.bench_infer --quick         # only the cases of the bars, 0.3 s each

It starts its own daemon (`shmstore serve --workers W --torch-threads T`, default one worker
with one thread), stores the ML-EKE model twice (batching on, batch_size 4096; batching off,
batch_size 0), and for 1, 4 and 8 client processes sending requests of 1, 16 and 64 rows it
runs each case for a fixed time. Every request is one put_tensor of the input, one run_model
and one get_tensor of the output. As an HPC job binds ranks and workers to separate cores,
the daemon and its workers run on the last W x T CPUs and the clients on the others, when
there are more CPUs than that (--no-bind turns this off).

It prints inferences (rows) per second and request latency (median, p99) per case, then:

  (a) the service with batching on against the raw model called in this process on the
      workers' CPUs, on batches of the mean size the workers formed, with W x T torch
      threads, timed right after the case; both rates are rows per wall second, slow calls
      included (bar: at least 80%). A worker's batch is made of whole requests, so the raw
      model runs batches of k and k + 1 requests' rows, mixed to give the workers' mean
      (raw_batch_sizes);
  (b) batching on against batching off for 8 clients sending 1 row (bar: at least 3x);
  (c) the median latency of one client sending 1 row with batching off against the median
      of the model called directly with one torch thread, timed right after that case (bar:
      at most 100 us more).

The bars are printed with PASS or FAIL, never asserted. With --rounds N each round prints
its table, and a summary gives each bar's median, lowest and highest value. The model is
$SHMSTORE_EKE_MODEL, else ../shared/models/ncar_ml_eke.pt next to the repository, else the
project's own stand-in from shmstore.inference.eke_model (the output says which).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

log = logging.getLogger("bench.infer")

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIENT_COUNTS = (1, 4, 8)
ROW_COUNTS = (1, 16, 64)
# --quick: the cases the bars need, for a check that the benchmark runs end to end.
QUICK_CLIENT_COUNTS = (1, 8)
QUICK_ROW_COUNTS = (1,)
BATCHED_KEY = "eke-batched"
SINGLE_KEY = "eke-single"
MAX_BATCH_ROWS = 4096
WORKER_START_TIMEOUT_S = 120.0

THROUGHPUT_BAR = 0.80        # service / raw model at the mean batch size formed
# With 8 clients of 1 row and one worker, batches grow only as fast as the clients send their
# next request. C clients on one core come back within microseconds. Python clients come back
# about 40 us apart, so their batches are about half as large and this bar fails.
BATCHING_GAIN_BAR = 3.0      # batching on / off, 8 clients x 1 row
OVERHEAD_BAR_US = 100.0      # service latency - direct call latency, 1 client x 1 row


@dataclass
class CaseResult:
    """One measured case of the service."""

    batching: bool
    clients: int
    rows: int
    requests: int
    seconds: float
    latency_median_us: float
    latency_p99_us: float
    mean_batch_rows: float
    # The raw model's inferences/s at the mean batch size, timed right after the case
    # (batching on only).
    raw_rate: Optional[float] = None

    @property
    def inferences_per_s(self) -> float:
        return self.requests * self.rows / self.seconds


# A client process: numpy and shmstore only. After one warm-up request it prints "ready",
# reads the common start and end times (CLOCK_MONOTONIC, shared by all processes) from stdin,
# sends requests from start until end, and prints its latencies as JSON.
CLIENT_CODE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import shmstore

    store, key, rows, number = sys.argv[1:5]
    rows = int(rows)
    client = shmstore.Client(store)
    rng = np.random.default_rng(int(number))
    x = rng.standard_normal((rows, 4)).astype(np.float32)
    input_key, output_key = f"bench-in-{number}", f"bench-out-{number}"
    client.put_tensor(input_key, x)
    client.run_model(key, [input_key], [output_key])
    print("ready", flush=True)
    start, end = map(float, sys.stdin.readline().split())
    while time.monotonic() < start:
        time.sleep(0.0005)
    latencies = []
    while True:
        began = time.monotonic()
        if began >= end:
            break
        client.put_tensor(input_key, x)
        client.run_model(key, [input_key], [output_key])
        client.get_tensor(output_key)
        latencies.append(time.monotonic() - began)
    print(json.dumps({"latencies": latencies}))
""")


def find_model(work_dir: Path) -> Tuple[Path, str]:
    """Return the model file to use and a label saying which one it is."""
    configured = os.environ.get("SHMSTORE_EKE_MODEL")
    if configured:
        return Path(configured), f"ML-EKE ({configured})"
    shared = REPO_ROOT.parent / "shared/models/ncar_ml_eke.pt"
    if shared.is_file():
        return shared, "ML-EKE (ncar_ml_eke.pt)"

    from shmstore.inference.eke_model import build_eke_like_model

    path = work_dir / "eke_like.pt"
    build_eke_like_model(path)
    return path, "ML-EKE stand-in (shmstore.inference.eke_model, the real model was not found)"


def describe_machine() -> str:
    """Return the CPU model, the number of CPUs and the Linux release."""
    from bench.report import describe_machine as describe_cpus

    return f"{describe_cpus()}, Linux {platform.release()}"


class ServiceDaemon:
    """`python -m shmstore serve --workers N` under a unique name; stopped on exit."""

    def __init__(self, workers: int, threads: int, log_path: Path,
                 cpus: Optional[set] = None) -> None:
        self.name = f"bench-infer-{os.getpid()}"
        self.workers = workers
        self.threads = threads
        self.cpus = cpus
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ServiceDaemon":
        import shmstore

        command = [sys.executable, "-m", "shmstore", "serve", "--name", self.name, "--memory",
                   "256M", "--workers", str(self.workers),
                   "--torch-threads", str(self.threads)]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=log_file, stderr=log_file,
                                            preexec_fn=_bind(self.cpus))
        try:
            shmstore.status.wait_for_store(self.name, 30)
            with shmstore.Client(self.name) as client:
                deadline = time.monotonic() + WORKER_START_TIMEOUT_S
                while sum(worker["state"] == "ready"
                          for worker in client.get_inference_workers()) < self.workers:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"inference workers did not start; daemon log: "
                                           f"{self.log_path}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        log.info("started shmstore serve (pid %d), store %s, %d workers x %d torch threads",
                 self.process.pid, self.name, self.workers, self.threads)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_case(store: str, key: str, clients: int, rows: int, duration_s: float,
             cpus: Optional[set] = None, c_client: Optional[str] = None) -> Dict:
    """Run clients client processes (bound to cpus when given) for duration_s, all starting
    together once each is ready; return their merged latencies. c_client: the compiled C
    client to run instead of the Python one."""
    program = [c_client] if c_client else [sys.executable, "-c", CLIENT_CODE]
    processes = [
        subprocess.Popen(program + [store, key, str(rows), str(number)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=_bind(cpus))
        for number in range(clients)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"benchmark client failed to start:\n"
                                   f"{process.communicate(timeout=30)[1]}")
        start = time.monotonic() + 0.05
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"{start!r} {start + duration_s!r}\n")
            process.stdin.flush()

        latencies: List[float] = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=duration_s + 120)
            if process.returncode != 0:
                raise RuntimeError(f"benchmark client failed:\n{stderr}")
            latencies.extend(json.loads(stdout.strip().splitlines()[-1])["latencies"])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return {"latencies": latencies, "seconds": duration_s}


def split_cpus(service_cpus: int) -> Tuple[Optional[set], Optional[set]]:
    """Return (service CPUs, client CPUs): the last service_cpus of the CPUs this process
    may use for the daemon and its workers, the rest for the clients. (None, None) when
    there are not enough CPUs to keep one for the clients."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= service_cpus:
        return None, None
    return set(cpus[-service_cpus:]), set(cpus[:-service_cpus])


def _bind(cpus: Optional[set]) -> Any:
    """Return a preexec_fn that binds the child process to cpus (None: no binding)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def percentile(samples: List[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_service(store: str, duration_s: float, client_counts: Tuple[int, ...],
                    row_counts: Tuple[int, ...], raw_model: "RawModel", raw_threads: int,
                    client_cpus: Optional[set] = None,
                    c_client: Optional[str] = None) -> Tuple[List[CaseResult], float]:
    """Run every case; return the results and the direct call's median latency.

    The raw model is timed right after each batched case, and the direct one-row call right
    after the case of one client sending one row with batching off. Each baseline thus runs
    under the same machine conditions as the case it is compared with.
    """
    import shmstore

    results = []
    direct_latency_s = None
    with shmstore.Client(store) as client:
        for batching, key in ((True, BATCHED_KEY), (False, SINGLE_KEY)):
            for clients in client_counts:
                for rows in row_counts:
                    before = _settled_stats(client, key)
                    case = run_case(store, key, clients, rows, duration_s, client_cpus,
                                    c_client)
                    after = _settled_stats(client, key)
                    batches = after["batches"] - before["batches"]
                    samples = after["samples"] - before["samples"]
                    latencies = case["latencies"]
                    result = CaseResult(
                        batching=batching, clients=clients, rows=rows,
                        requests=len(latencies), seconds=case["seconds"],
                        latency_median_us=statistics.median(latencies) * 1e6,
                        latency_p99_us=percentile(latencies, 0.99) * 1e6,
                        mean_batch_rows=samples / batches if batches else float(rows))
                    if batching:
                        result.raw_rate = raw_model.throughput(
                            raw_batch_sizes(result.mean_batch_rows, rows), raw_threads)
                    elif clients == 1 and rows == 1:
                        direct_latency_s = raw_model.latency(1, 1)
                    log.info("%s %d clients x %d rows: %.0f inferences/s, median %.0f us, "
                             "mean batch %.1f rows", "batched" if batching else "single",
                             clients, rows, result.inferences_per_s, result.latency_median_us,
                             result.mean_batch_rows)
                    results.append(result)
    if direct_latency_s is None:
        direct_latency_s = raw_model.latency(1, 1)
    return results, direct_latency_s


def _settled_stats(client: Any, key: str) -> Dict[str, Any]:
    """Return the model's statistics once two reads 300 ms apart agree (workers publish
    them within 200 ms of going idle)."""
    previous = client.get_model_stats(key)
    while True:
        time.sleep(0.3)
        current = client.get_model_stats(key)
        if current["requests"] == previous["requests"]:
            return current
        previous = current


def raw_batch_sizes(mean_rows: float, request_rows: int, calls: int = 100) -> List[int]:
    """Return the row counts of `calls` raw model calls, each of k or k + 1 whole requests of
    request_rows rows, spread evenly so that their mean is mean_rows (to 1 / calls of a
    request). Rounding the mean to one size instead would favour the service or the raw
    model by up to half a request per batch. For example, 8 one-row clients form batches of
    4.8 rows on average. The raw model at 5 rows would run 4% more rows per call."""
    requests = max(1.0, mean_rows / request_rows)
    low = int(requests)
    high_calls = round((requests - low) * calls)
    sizes = []
    for call in range(calls):
        # Spread the large calls evenly: a call is large when the running count of large
        # calls, high_calls * call / calls, passes another whole number.
        large = (call + 1) * high_calls // calls > call * high_calls // calls
        sizes.append((low + 1 if large else low) * request_rows)
    return sizes


class RawModel:
    """The model called directly in this process, as a user would without the service."""

    def __init__(self, model_path: Path, min_seconds: float = 0.5,
                 cpus: Optional[set] = None) -> None:
        import torch

        self.torch = torch
        self.model = torch.jit.load(str(model_path)).eval()
        self.min_seconds = min_seconds
        self.cpus = cpus            # timed on these CPUs (the workers' own), when given

    def _time_calls(self, sizes: List[int], threads: int) -> Tuple[List[float], float, int]:
        """Return the seconds of each call, the wall seconds of the timed loop and the rows
        it ran, calling the model on batches of the given row counts in turn."""
        if self.cpus:
            saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.cpus)
            try:
                return self._time_calls_here(sizes, threads)
            finally:
                os.sched_setaffinity(0, saved)
        return self._time_calls_here(sizes, threads)

    def _time_calls_here(self, sizes: List[int],
                         threads: int) -> Tuple[List[float], float, int]:
        torch = self.torch
        torch.set_num_threads(threads)
        by_rows = {rows: torch.randn(max(1, rows), 4) for rows in set(sizes)}
        inputs = [by_rows[rows] for rows in sizes]
        timings = []
        rows_run = 0
        with torch.inference_mode():
            # TorchScript's profiling executor specialises a graph for the shapes it has
            # seen over its first calls, so warm up well past them before timing.
            warmup_end = time.monotonic() + 0.2
            calls = 0
            while calls < 20 or calls < len(inputs) or time.monotonic() < warmup_end:
                self.model(inputs[calls % len(inputs)].clone())
                calls += 1
            began_loop = time.perf_counter()
            deadline = time.monotonic() + self.min_seconds
            while time.monotonic() < deadline or len(timings) < 20:
                x = inputs[len(timings) % len(inputs)]
                began = time.perf_counter()
                # A copy per call, as the workers copy the batch out of the store: the
                # ML-EKE model writes into its input.
                self.model(x.clone())
                timings.append(time.perf_counter() - began)
                rows_run += x.shape[0]
            wall = time.perf_counter() - began_loop
        return timings, wall, rows_run

    def throughput(self, sizes: List[int], threads: int) -> float:
        """Return the inferences per second of a timed loop of calls on batches of the given
        row counts, the same statistic as the service's rate (rows per wall second, slow
        calls included)."""
        _timings, wall, rows_run = self._time_calls(sizes, threads)
        return rows_run / wall

    def latency(self, batch_rows: int, threads: int) -> float:
        """Return the median seconds of one call on batch_rows rows."""
        timings, _wall, _rows = self._time_calls([batch_rows], threads)
        return statistics.median(timings)


def format_report(results: List[CaseResult], direct_latency_s: float, model_label: str,
                  workers: int, threads: int, duration_s: float, binding: str,
                  clients_label: str = "Python clients") -> str:
    lines = [
        f"model: {model_label}",
        f"machine: {describe_machine()}",
        f"service: {workers} CPU worker(s) x {threads} torch thread(s); raw model: "
        f"{workers * threads} torch thread(s); {duration_s:g} s per case; each request = "
        f"put_tensor + run_model + get_tensor from {clients_label}",
        f"CPUs: {binding}",
        "",
        "| batching | clients | rows/request | inferences/s | latency median us | "
        "latency p99 us | mean batch rows | raw model at that batch, inferences/s | "
        "service/raw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        raw_cell, ratio_cell = "", ""
        if result.raw_rate is not None:
            raw_cell = f"{result.raw_rate:,.0f}"
            ratio_cell = f"{result.inferences_per_s / result.raw_rate:.2f}"
        lines.append(
            f"| {'on' if result.batching else 'off'} | {result.clients} | {result.rows} | "
            f"{result.inferences_per_s:,.0f} | {result.latency_median_us:,.0f} | "
            f"{result.latency_p99_us:,.0f} | {result.mean_batch_rows:.1f} | {raw_cell} | "
            f"{ratio_cell} |")

    lines.append("")
    lines.append("| bar | measured | target | result |")
    lines.append("|---|---|---|---|")
    for bar in evaluate_bars(results, direct_latency_s):
        lines.append(f"| {bar.name} | {bar.text} | {bar.target} | "
                     f"{'PASS' if bar.passed else 'FAIL'} |")
    return "\n".join(lines)


@dataclass
class Bar:
    """A performance bar: the measured value and whether it passes."""

    name: str
    value: float
    text: str
    target: str
    passed: bool


def evaluate_bars(results: List[CaseResult], direct_latency_s: float) -> List[Bar]:
    bars = []
    for result in results:
        if result.raw_rate is None:
            continue
        ratio = result.inferences_per_s / result.raw_rate
        bars.append(Bar(f"service / raw model, {result.clients} clients x {result.rows} rows",
                        ratio, f"{ratio:.2f}", f">= {THROUGHPUT_BAR:.2f}",
                        ratio >= THROUGHPUT_BAR))

    by_case = {(r.batching, r.clients, r.rows): r for r in results}
    gain = (by_case[(True, 8, 1)].inferences_per_s /
            by_case[(False, 8, 1)].inferences_per_s)
    bars.append(Bar("batching on / off, 8 clients x 1 row", gain, f"{gain:.2f}",
                    f">= {BATCHING_GAIN_BAR:.1f}", gain >= BATCHING_GAIN_BAR))
    overhead_us = by_case[(False, 1, 1)].latency_median_us - direct_latency_s * 1e6
    bars.append(Bar("service latency - direct call, 1 client x 1 row, batching off",
                    overhead_us,
                    f"{overhead_us:,.0f} us (direct {direct_latency_s * 1e6:,.0f} us)",
                    f"<= {OVERHEAD_BAR_US:.0f} us", overhead_us <= OVERHEAD_BAR_US))
    return bars


def format_rounds(rounds: List[List[Bar]]) -> str:
    """Summarise the bars of several rounds: median, lowest and highest value."""
    lines = [f"bars over {len(rounds)} rounds", "",
             "| bar | median | lowest | highest | target | rounds passed |",
             "|---|---|---|---|---|---|"]
    for position, first in enumerate(rounds[0]):
        values = [bars[position].value for bars in rounds]
        passed = sum(bars[position].passed for bars in rounds)
        lines.append(f"| {first.name} | {statistics.median(values):,.2f} | {min(values):,.2f} | "
                     f"{max(values):,.2f} | {first.target} | {passed} of {len(rounds)} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=2.0,
                        help="seconds each case runs (default 2)")
    parser.add_argument("--workers", type=int, default=1,
                        help="inference workers of the daemon (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (default 1); the raw model gets "
                             "workers x threads")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every case this many times and summarise the bars "
                             "(default 1)")
    parser.add_argument("--clients", choices=("c", "python"), default="c",
                        help="client processes in C, like the ranks of a simulation "
                             "(default; compiled with gcc against libshmstore), or in Python")
    parser.add_argument("--no-bind", action="store_true",
                        help="do not bind the daemon and its workers to the last "
                             "workers x threads CPUs and the clients to the others")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true",
                        help="only 1 and 8 clients sending 1 row, 0.3 s each: checks that "
                             "the benchmark runs, measures nothing worth recording")
    arguments = parser.parse_args(argv)
    client_counts, row_counts = CLIENT_COUNTS, ROW_COUNTS
    if arguments.quick:
        client_counts, row_counts = QUICK_CLIENT_COUNTS, QUICK_ROW_COUNTS
        arguments.duration = min(arguments.duration, 0.3)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    import shmstore
    import shmstore.status  # noqa: F401  (ServiceDaemon uses it)

    workers, threads = arguments.workers, arguments.threads
    rounds: List[List[Bar]] = []
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as work:
        work_dir = Path(work)
        model_path, model_label = find_model(work_dir)
        service_cpus, client_cpus = (None, None) if arguments.no_bind else \
            split_cpus(workers * threads)
        binding = "not bound"
        if service_cpus and client_cpus:
            binding = (f"daemon, workers and raw model on {sorted(service_cpus)}, clients on "
                       f"{sorted(client_cpus)}")
        log.info("CPUs: %s", binding)
        c_client = None
        if arguments.clients == "c":
            from bench.c_bench import compile_program

            c_client = compile_program(work, str(REPO_ROOT / "bench/c/infer_client.c"))
        raw_model = RawModel(model_path, min_seconds=min(0.5, arguments.duration),
                             cpus=service_cpus)
        with ServiceDaemon(workers, threads, work_dir / "daemon.log",
                           service_cpus) as daemon:
            with shmstore.Client(daemon.name) as client:
                client.set_model_from_file(BATCHED_KEY, model_path, batch_size=MAX_BATCH_ROWS)
                client.set_model_from_file(SINGLE_KEY, model_path, batch_size=0)
            for number in range(max(1, arguments.rounds)):
                results, direct_latency_s = measure_service(
                    daemon.name, arguments.duration, client_counts, row_counts, raw_model,
                    workers * threads, client_cpus, c_client)
                if arguments.rounds > 1:
                    print(f"round {number + 1} of {arguments.rounds}")
                print(format_report(results, direct_latency_s, model_label, workers,
                                    threads, arguments.duration, binding,
                                    f"{'C' if c_client else 'Python'} clients"), flush=True)
                print()
                rounds.append(evaluate_bars(results, direct_latency_s))
                records.append({
                    "cases": [dict(vars(result), inferences_per_s=result.inferences_per_s)
                              for result in results],
                    "direct_latency_us": direct_latency_s * 1e6,
                })

    if len(rounds) > 1:
        print(format_rounds(rounds))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps({
            "model": model_label,
            "machine": describe_machine(),
            "workers": workers,
            "threads": threads,
            "rounds": records,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
