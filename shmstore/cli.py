"""The `shmstore` command: serve, status and config subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from shmstore import config
from shmstore.errors import ShmstoreError

DEFAULT_NAME = "default"


class _LogFormatter(logging.Formatter):
    """Format records as "shmstore: message", with the level named for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"shmstore: {record.levelname.lower()}: {message}"
        return f"shmstore: {message}"


def configure_logging(level: str) -> None:
    """Send log records to stderr unless the embedding program configured logging already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())


def default_store_name() -> str:
    return os.environ.get("SHMSTORE_NAME") or DEFAULT_NAME


def store_name_argument(text: str) -> str:
    # The C core reads an empty name as $SHMSTORE_NAME or "default", which would make the
    # daemon create a store under another name than the one it logs.
    if not text:
        raise argparse.ArgumentTypeError(
            "store name is empty; omit --name to use $SHMSTORE_NAME or 'default'")
    return text


def parse_size_argument(text: str) -> int:
    from shmstore.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmstore", description="Node-local shared-memory tensor store.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="lowest level of log messages printed on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # main() hands `launch` to the launcher before this parser runs; the entry only lists it.
    commands.add_parser("launch", add_help=False,
                        help="start a store next to an application's ranks and stop it after "
                             "them (`shmstore launch --help` lists the options)")

    serve = commands.add_parser("serve", help="run the daemon of a store in the foreground")
    serve.add_argument("--name", default=default_store_name(), type=store_name_argument,
                       help="store name (default: $SHMSTORE_NAME, else 'default')")
    serve.add_argument("--memory", required=True, type=parse_size_argument,
                       help="data arena size in bytes, with an optional binary unit K, M, G "
                            "or T (512M, 1.5G, 4G)")
    serve.add_argument("--max-clients", type=positive_int, default=0,
                       help="max number of attached client processes (default 256)")
    serve.add_argument("--max-keys", type=positive_int, default=0,
                       help="max number of stored keys (default 65536)")
    serve.add_argument("--workers", type=int, default=None,
                       help="number of inference worker processes (default: none, so "
                            "run_model fails with WorkerError)")
    serve.add_argument("--device", default=None,
                       help="torch device of the workers: cpu, cuda, or a comma-separated "
                            "list such as cuda:0,cuda:1 that workers take in turn "
                            "(default cpu)")
    serve.add_argument("--torch-threads", type=positive_int, default=None,
                       help="torch threads per worker (default: usable cores divided by "
                            "the number of workers)")

    status = commands.add_parser("status", help="print memory, keys and clients of a store")
    status.add_argument("--name", default=default_store_name(), type=store_name_argument,
                        help="store name (default: $SHMSTORE_NAME, else 'default')")

    flags = commands.add_parser(
        "config", help="print compiler and linker flags for C and Fortran programs")
    flags.add_argument("--cflags", action="store_true", help="C compiler flags (-I...)")
    flags.add_argument("--libs", action="store_true",
                       help="linker flags (-L... -Wl,-rpath,... -lshmstore)")
    flags.add_argument("--fflags", action="store_true",
                       help="Fortran compiler flags (-I of the module folder)")
    return parser


def run_serve(arguments: argparse.Namespace) -> int:
    from shmstore.daemon import ServeOptions, serve

    options = ServeOptions(
        name=arguments.name,
        memory_bytes=arguments.memory,
        max_clients=arguments.max_clients,
        max_keys=arguments.max_keys,
        workers=arguments.workers,
        device=arguments.device,
        torch_threads=arguments.torch_threads,
    )
    return serve(options)


def run_status(arguments: argparse.Namespace) -> int:
    from shmstore.status import format_status, store_stats

    try:
        stats = store_stats(arguments.name)
    except ShmstoreError as error:
        reason = error.detail or str(error)
        print(f"shmstore: error: cannot read store {arguments.name!r}: {reason}\n"
              f"shmstore: start it with `shmstore serve --name {arguments.name} --memory SIZE`",
              file=sys.stderr)
        return 1
    print(format_status(arguments.name, stats))

    # ---- inference workers and model statistics (shmstore/inference/status.py) ----
    from shmstore.inference.status import format_inference_status

    try:
        inference = format_inference_status(arguments.name)
    except ShmstoreError as error:
        inference = f"inference: cannot read the model statistics: {error}"
    if inference is not None:
        print(inference)
    # ---- end of inference status ----
    return 0


def run_config(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not (arguments.cflags or arguments.libs or arguments.fflags):
        parser.error("config needs at least one of --cflags, --libs, --fflags")

    flags: List[str] = []
    try:
        if arguments.cflags:
            flags += config.cflags()
        if arguments.fflags:
            flags += config.fflags()
        if arguments.libs:
            flags += config.libs()
    except config.BuildMissingError as error:
        print(f"shmstore: error: {error}", file=sys.stderr)
        return 1
    print(" ".join(flags))
    return 0


def run_launch(argv: List[str]) -> int:
    """Run `shmstore launch`, implemented in shmstore.launcher (see docs/launch.md).

    It is dispatched before argparse because everything after its `--` is the application's
    own command line.
    """
    from shmstore.launcher.cli import main as launch_main

    return launch_main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the shmstore command with argv (default: sys.argv[1:]); return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:
        return run_launch(argv[1:])

    parser = build_parser()
    arguments = parser.parse_args(argv)
    configure_logging(arguments.log_level)

    if arguments.command == "serve":
        return run_serve(arguments)
    if arguments.command == "status":
        return run_status(arguments)
    if arguments.command == "launch":
        parser.error("launch must be the first argument: shmstore launch [options] -- COMMAND")
    return run_config(arguments, parser)


if __name__ == "__main__":
    sys.exit(main())
