"""Fixtures of the pytest-benchmark suite: one shmstore daemon and one redis-server per run."""

from __future__ import annotations

from typing import Iterator

import pytest

from bench.redis_server import RedisServer, RedisServerError
from bench.store_daemon import StoreDaemon


@pytest.fixture(scope="session")
def store_daemon() -> Iterator[StoreDaemon]:
    with StoreDaemon(memory="512M") as daemon:
        yield daemon


@pytest.fixture(scope="session")
def store_client(store_daemon: StoreDaemon) -> object:
    import shmstore

    return shmstore.Client(name=store_daemon.name)


@pytest.fixture(scope="session")
def redis_connection() -> Iterator[object]:
    redis = pytest.importorskip("redis", reason="redis-py is not installed: "
                                                "pip install redis hiredis")
    try:
        server = RedisServer()
    except RedisServerError as error:
        pytest.skip(str(error))

    with server:
        connection = redis.Redis(unix_socket_path=server.socket_path)
        yield connection
        connection.close()
