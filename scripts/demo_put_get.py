"""Put tensors into a running shmstore from one process and read them back from another.

Run `put` first, then `get`, each as its own process, against the store that
`shmstore serve --name NAME` serves. The `put` process stores three tensors and a
checksum for each; the `get` process maps them zero-copy and verifies the checksums.
"""

import argparse
import logging
import sys
import zlib

import numpy as np

import shmstore

log = logging.getLogger("shmstore.demo")

# Key, shape and dtype of each tensor: a 2-D field in C order, the same in Fortran order,
# and a small vector, so that both memory orders cross the process boundary.
TENSORS = [
    ("demo/temperature", (512, 512), np.float64, "C"),
    ("demo/salinity", (512, 256), np.float32, "F"),
    ("demo/coefficients", (16,), np.int64, "C"),
]


def crc32_of(array: np.ndarray) -> int:
    """Return the CRC-32 of the array's elements in its own memory order."""
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    return zlib.crc32(array.tobytes(order=order))


def put_tensors(client: "shmstore.Client") -> None:
    """Store every demo tensor with a checksum tensor next to it."""
    rng = np.random.default_rng(2026)

    for key, shape, dtype, order in TENSORS:
        array = np.asarray(rng.uniform(-1000, 1000, size=shape), dtype=dtype, order=order)
        client.put_tensor(key, array)
        client.put_tensor(key + "/crc32", np.array([crc32_of(array)], dtype=np.uint64))
        log.info("put %s: shape %s, %s, order %s, %d bytes", key, shape,
                 np.dtype(dtype).name, order, array.nbytes)


def get_tensors(client: "shmstore.Client") -> bool:
    """Read every demo tensor zero-copy and return whether all checksums match."""
    all_match = True

    for key, shape, dtype, order in TENSORS:
        view = client.get_tensor(key)
        expected = int(client.get_tensor(key + "/crc32")[0])
        actual = crc32_of(view)

        log.info("get %s: shape %s, %s, read-only %s, owns its memory %s, crc32 %s",
                 key, view.shape, view.dtype, not view.flags.writeable, view.flags.owndata,
                 "matches" if actual == expected else "DIFFERS")
        if view.shape != shape or view.dtype != np.dtype(dtype) or actual != expected:
            all_match = False

    return all_match


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["put", "get"], help="which side of the demo to run")
    parser.add_argument("--name", required=True, help="name of the running store")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s[%(process)d]: %(message)s")

    client = shmstore.Client(name=args.name)
    if args.role == "put":
        put_tensors(client)
        return 0

    if get_tensors(client):
        log.info("all tensors arrived intact")
        return 0
    log.error("a tensor differs from what the put process stored")
    return 1


if __name__ == "__main__":
    sys.exit(main())
