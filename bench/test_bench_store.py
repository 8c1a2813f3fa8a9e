"""pytest-benchmark suite of the store cases that `python -m bench.report` prints.

Run from the repository root: `pytest bench/ --benchmark-only`. The default test run
(`pytest tests`) does not collect this folder.
"""

from __future__ import annotations

from typing import Callable

import pytest

from bench.cases import SIZES, MemcpyCase, RedisCase, SharedMemoryCase, ShmstoreCase, make_tensor

OPERATIONS = ["put", "get", "put_get"]
SIZE_LABELS = list(SIZES)


def run_case(benchmark: Callable, case: object, operation: str) -> None:
    try:
        benchmark(getattr(case, operation))
    finally:
        case.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("size", SIZE_LABELS)
def test_shmstore(benchmark: Callable, store_client: object, size: str, operation: str) -> None:
    benchmark.group = f"{size} {operation}"
    case = ShmstoreCase(store_client, make_tensor(SIZES[size]), "bench/pytest")
    run_case(benchmark, case, operation)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("size", SIZE_LABELS)
def test_redis(benchmark: Callable, redis_connection: object, size: str,
               operation: str) -> None:
    benchmark.group = f"{size} {operation}"
    case = RedisCase(redis_connection, make_tensor(SIZES[size]), "bench/pytest")
    run_case(benchmark, case, operation)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("size", SIZE_LABELS)
def test_shared_memory(benchmark: Callable, size: str, operation: str) -> None:
    benchmark.group = f"{size} {operation}"
    case = SharedMemoryCase(make_tensor(SIZES[size]))
    run_case(benchmark, case, operation)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("size", SIZE_LABELS)
def test_memcpy(benchmark: Callable, size: str) -> None:
    # In the put group, because a put copies the tensor once, like memcpy.
    benchmark.group = f"{size} put"
    case = MemcpyCase(make_tensor(SIZES[size]))
    benchmark(case.copy)
