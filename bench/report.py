"""Measure shmstore put and get against Redis, multiprocessing.shared_memory and memcpy.

Run from the repository root, after `pip install -e .`:

    python -m bench.report            # the full run, about one minute on 2 cores
    python -m bench.report --quick    # a few calls per case, to check that it all works

It starts its own shmstore daemon and its own redis-server, which listens on a unix socket in
a temp dir and persists nothing. It times every case in this one run and prints medians, 99th
percentiles, ratios and the performance bars with PASS or FAIL, then stops both servers. The
bars are printed, never asserted: the exit code is 0 whenever every case could be measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
from typing import Any, Callable

import numpy as np

from bench.c_bench import CBenchError, run_c_bench
from bench.cases import SIZES, MemcpyCase, RedisCase, SharedMemoryCase, ShmstoreCase, make_tensor
from bench.redis_server import RedisServer
from bench.store_daemon import StoreDaemon
from bench.timing import Summary, time_operation

log = logging.getLogger("bench.report")

# Timed calls per case and size. The full counts keep the run near one minute on 2 cores,
# because 64 MiB through Redis or shared_memory costs 50 to 200 milliseconds per call.
FULL_REPETITIONS = {"8 KiB": 5000, "1 MiB": 500, "64 MiB": 40}
QUICK_REPETITIONS = {"8 KiB": 20, "1 MiB": 5, "64 MiB": 2}

# Implementation labels, in the column order of the printed tables.
SHMSTORE_PYTHON = "shmstore Python"
SHMSTORE_C = "shmstore C"
REDIS = "Redis"
SHARED_MEMORY = "shared_memory"
MEMCPY_NUMPY = "memcpy numpy"
MEMCPY_C = "memcpy C"
IMPLEMENTATIONS = [SHMSTORE_PYTHON, SHMSTORE_C, REDIS, SHARED_MEMORY, MEMCPY_NUMPY, MEMCPY_C]
OPERATIONS = ["put", "get", "put+get", "copy"]

# A get counts as independent of the tensor size when 64 MiB takes at most this many times
# as long as 8 KiB.
ZERO_COPY_MAX_RATIO = 2.0

# results[implementation][size label][operation]
Results = dict[str, dict[str, dict[str, Summary]]]


def describe_machine() -> str:
    """Return the CPU model and the number of CPUs, as /proc/cpuinfo and os report them."""
    model = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def describe_redis_client() -> str:
    """Return the redis-py version and which reply parser it uses."""
    import redis
    from redis.connection import DefaultParser

    if "hiredis" in DefaultParser.__name__.lower():
        import hiredis

        return f"redis-py {redis.__version__} with hiredis {hiredis.__version__}"
    return (f"redis-py {redis.__version__} WITHOUT hiredis, so Redis is measured with the "
            "slower pure-Python parser (pip install hiredis)")


def time_case(results: Results, implementation: str, size: str,
              operations: dict[str, tuple[Callable[[], object], int]], warmup: int) -> None:
    """Time every operation of one case and record it under results.

    operations maps an operation's name to its callable and its number of timed calls.
    """
    for operation, (call, repetitions) in operations.items():
        summary = time_operation(call, repetitions, warmup)
        results.setdefault(implementation, {}).setdefault(size, {})[operation] = summary
        log.info("%-16s %-7s %-8s median %10.2f us", implementation, size, operation,
                 summary.median_s * 1e6)


def measure_python(results: Results, repetitions: dict[str, int], warmup: int,
                   store_name: str, redis_socket: str) -> None:
    """Time the cases that run inside this Python process."""
    import redis

    import shmstore

    client = shmstore.Client(name=store_name)
    connection = redis.Redis(unix_socket_path=redis_socket)

    # A zero-copy get costs the same at every size, so it is timed as often as at the smallest
    # size everywhere. Only 40 samples of a one-microsecond call give a noisy median.
    zero_copy_get_count = max(repetitions.values())

    for size, nbytes in SIZES.items():
        tensor = make_tensor(nbytes)
        count = repetitions[size]

        memcpy = MemcpyCase(tensor)
        time_case(results, MEMCPY_NUMPY, size, {"copy": (memcpy.copy, count)}, warmup)
        del memcpy

        # Each case is built only when its turn comes, so that no other case keeps a copy
        # of the tensor in a server or a segment while it is timed.
        case_factories: list[tuple[str, Callable[[], Any], int]] = [
            (SHMSTORE_PYTHON, lambda: ShmstoreCase(client, tensor, "bench/python"),
             zero_copy_get_count),
            (SHARED_MEMORY, lambda: SharedMemoryCase(tensor), zero_copy_get_count),
            (REDIS, lambda: RedisCase(connection, tensor, "bench/redis"), count),
        ]
        for implementation, make_case, get_count in case_factories:
            case = make_case()
            try:
                time_case(results, implementation, size,
                          {"put": (case.put, count), "get": (case.get, get_count),
                           "put+get": (case.put_get, count)}, warmup)
            finally:
                case.close()

    connection.close()
    client.close()


def measure_c(results: Results, repetitions: dict[str, int], store_name: str) -> None:
    """Compile and run bench/c/bench_store.c, and record its timings."""
    by_bytes = run_c_bench(store_name, {SIZES[size]: count
                                        for size, count in repetitions.items()})

    for size, nbytes in SIZES.items():
        entry = by_bytes[nbytes]
        for operation, name in [("put", "put"), ("get", "get"), ("put+get", "put_get")]:
            results.setdefault(SHMSTORE_C, {}).setdefault(size, {})[operation] = \
                summary_from_c(entry[name])
        results.setdefault(MEMCPY_C, {}).setdefault(size, {})["copy"] = \
            summary_from_c(entry["memcpy"])


def summary_from_c(timing: dict[str, float]) -> Summary:
    return Summary(timing["median_us"] * 1e-6, timing["p99_us"] * 1e-6, int(timing["samples"]))


def lookup(results: Results, implementation: str, size: str,
           operation: str) -> Summary | None:
    return results.get(implementation, {}).get(size, {}).get(operation)


def format_microseconds(seconds: float) -> str:
    microseconds = seconds * 1e6
    if microseconds < 100:
        return f"{microseconds:.2f}"
    return f"{microseconds:,.0f}"


def print_table(results: Results, title: str, field: Callable[[Summary], float],
                sizes: list[str]) -> None:
    """Print one row per size and operation, one column per implementation."""
    width = 16
    print(f"\n{title}")
    print(f"{'size':<8}{'operation':<10}" + "".join(f"{name:>{width}}"
                                                   for name in IMPLEMENTATIONS))
    for size in sizes:
        for operation in OPERATIONS:
            cells = []
            for implementation in IMPLEMENTATIONS:
                summary = lookup(results, implementation, size, operation)
                cells.append("-" if summary is None else format_microseconds(field(summary)))
            if any(cell != "-" for cell in cells):
                print(f"{size:<8}{operation:<10}" + "".join(f"{cell:>{width}}"
                                                           for cell in cells))


def ratio(numerator: Summary | None, denominator: Summary | None) -> float | None:
    """Return the ratio of two medians, or None when either was not measured."""
    if numerator is None or denominator is None or denominator.median_s == 0:
        return None
    return numerator.median_s / denominator.median_s


def print_ratios(results: Results) -> None:
    """Print how many times slower each alternative is than shmstore from Python."""
    print("\nRatios of medians (how many times longer than shmstore Python; "
          "above 1 means shmstore is faster)")
    others = [REDIS, SHARED_MEMORY, SHMSTORE_C]
    print(f"{'size':<8}{'operation':<10}" + "".join(f"{name:>16}" for name in others))
    for size in SIZES:
        for operation in ["put", "get", "put+get"]:
            base = lookup(results, SHMSTORE_PYTHON, size, operation)
            cells = []
            for implementation in others:
                value = ratio(lookup(results, implementation, size, operation), base)
                cells.append("-" if value is None else f"{value:.2f}x")
            print(f"{size:<8}{operation:<10}" + "".join(f"{cell:>16}" for cell in cells))


def bar_checks(results: Results) -> list[dict[str, Any]]:
    """Evaluate every performance bar; a bar whose inputs are missing has passed None."""
    checks: list[dict[str, Any]] = []

    def add(description: str, value: float | None, unit: str, passed: bool | None) -> None:
        checks.append({"bar": description, "value": value, "unit": unit, "passed": passed})

    for implementation in [SHMSTORE_PYTHON, SHMSTORE_C]:
        value = ratio(lookup(results, implementation, "64 MiB", "get"),
                      lookup(results, implementation, "8 KiB", "get"))
        add(f"{implementation}: get 64 MiB / get 8 KiB <= {ZERO_COPY_MAX_RATIO:g} "
            "(zero-copy)", value, "x", None if value is None else value <= ZERO_COPY_MAX_RATIO)

    for implementation, reference in [(SHMSTORE_PYTHON, MEMCPY_NUMPY),
                                      (SHMSTORE_C, MEMCPY_C)]:
        value = ratio(lookup(results, reference, "64 MiB", "copy"),
                      lookup(results, implementation, "64 MiB", "put"))
        add(f"{implementation}: put 64 MiB bandwidth / {reference} bandwidth >= 0.5",
            value, "x", None if value is None else value >= 0.5)

    value = ratio(lookup(results, REDIS, "8 KiB", "put+get"),
                  lookup(results, SHMSTORE_PYTHON, "8 KiB", "put+get"))
    add(f"{SHMSTORE_PYTHON}: put+get 8 KiB at least 10x faster than {REDIS}", value, "x",
        None if value is None else value >= 10)

    summary = lookup(results, SHMSTORE_C, "8 KiB", "put+get")
    value = None if summary is None else summary.median_s * 1e6
    add(f"{SHMSTORE_C}: put+get 8 KiB median < 5 us", value, "us",
        None if value is None else value < 5)

    return checks


def print_bars(checks: list[dict[str, Any]]) -> None:
    print("\nPerformance bars")
    for check in checks:
        if check["passed"] is None:
            verdict, value_text = "NOT MEASURED", "-"
        else:
            verdict = "PASS" if check["passed"] else "FAIL"
            value_text = f"{check['value']:.2f} {check['unit']}"
        print(f"  {verdict:<13}{value_text:>12}   {check['bar']}")


def results_to_json(results: Results) -> dict[str, Any]:
    return {implementation: {size: {operation: summary.to_json()
                                    for operation, summary in operations.items()}
                             for size, operations in sizes.items()}
            for implementation, sizes in results.items()}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Time shmstore put and get from Python and C against Redis over a "
                    "unix socket, multiprocessing.shared_memory and memcpy.")
    parser.add_argument("--quick", action="store_true",
                        help="time only a few calls per case, to check that everything runs")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every timing (microseconds) and bar to this file")
    parser.add_argument("--memory", default="512M",
                        help="data arena size of the benchmark's store, such as 512M or 2G "
                             "(default: 512M, room for three versions of the 64 MiB tensor)")
    parser.add_argument("--verbose", action="store_true", help="log each case as it is timed")
    return parser.parse_args(argv)


def exit_on_sigterm(signal_number: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit, so that the servers are stopped on the way out."""
    sys.exit(128 + signal_number)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    repetitions = QUICK_REPETITIONS if arguments.quick else FULL_REPETITIONS
    warmup = 1 if arguments.quick else 10
    results: Results = {}
    c_error = ""

    with StoreDaemon(memory=arguments.memory) as daemon, RedisServer() as redis_server:
        measure_python(results, repetitions, warmup, daemon.name, redis_server.socket_path)
        try:
            measure_c(results, repetitions, daemon.name)
        except CBenchError as error:
            c_error = str(error)
            log.error("the C benchmark failed, so its columns stay empty: %s", error)
        redis_version = redis_server.version

    print(f"shmstore data-path benchmark, {'quick' if arguments.quick else 'full'} run")
    print(f"Machine: {describe_machine()}")
    print(f"Python {platform.python_version()}, numpy {np.__version__}, "
          f"redis-server {redis_version}, {describe_redis_client()}")
    print("Calls timed per case: " + ", ".join(f"{size} x{count}"
                                               for size, count in repetitions.items())
)
    print(f"Zero-copy gets (shmstore Python, shared_memory): x{max(repetitions.values())} "
          "at every size")
    print_table(results, "Median per call, microseconds", lambda s: s.median_s, list(SIZES))
    print_table(results, "99th percentile per call, microseconds", lambda s: s.p99_s,
                list(SIZES))
    print_ratios(results)
    checks = bar_checks(results)
    print_bars(checks)

    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as output:
            json.dump({"quick": arguments.quick, "results": results_to_json(results),
                       "bars": checks, "c_error": c_error}, output, indent=2)

    if c_error:
        print(f"\nThe C benchmark failed: {c_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
