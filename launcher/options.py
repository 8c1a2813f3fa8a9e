"""Launch options: the parsed command line of `shmstore launch`, independent of argparse."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

SCHEDULERS = ("local", "slurm", "pbs")

# A store name becomes part of /dev/shm file names and of command lines, so it is limited to
# characters that need no quoting anywhere.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")

_MODEL_INT_SETTINGS = ("batch_size", "min_batch_size", "min_batch_timeout")
_MODEL_STR_SETTINGS = ("device", "backend")


class OptionError(ValueError):
    """An invalid launch option; the message names the option and the value."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model to store before the ranks start, from `--model KEY=PATH[,setting=value]...`."""

    key: str
    path: str
    backend: str = "TORCH"
    device: str = "CPU"
    batch_size: int = 0
    min_batch_size: int = 0
    min_batch_timeout: int = 0

    def to_argument(self) -> str:
        """Format the spec back into the `--model` syntax, for node-side command lines."""
        return (
            f"{self.key}={self.path},backend={self.backend},device={self.device},"
            f"batch_size={self.batch_size},min_batch_size={self.min_batch_size},"
            f"min_batch_timeout={self.min_batch_timeout}"
        )


@dataclasses.dataclass
class LaunchOptions:
    """Everything `shmstore launch` needs to start a daemon and run an application."""

    name: str
    memory: str
    command: list[str]
    workers: Optional[int] = None
    device: Optional[str] = None
    models: list[ModelSpec] = dataclasses.field(default_factory=list)
    ranks: int = 1
    mpi: bool = False
    scheduler: str = "local"
    nodes: Optional[int] = None
    log_dir: str = ""
    dry_run: bool = False
    # Seconds to wait for the store to become ready and the models to load.
    start_timeout_s: float = 60.0
    # Seconds a rank or the daemon gets between SIGTERM and SIGKILL.
    grace_period_s: float = 5.0
    # Commands run beside the ranks on the launch node (argv lists), and the seconds they may
    # run on after the ranks finished.
    sidecars: list[list[str]] = dataclasses.field(default_factory=list)
    sidecar_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.log_dir:
            self.log_dir = os.path.join(".", "shmstore-logs", self.name)


def default_store_name() -> str:
    """Return a store name unique to this launch, so that two launches on a node never clash."""
    return f"launch-{os.getpid()}"


def validate_store_name(name: str) -> str:
    """Return the name unchanged, or raise OptionError if it cannot name a segment."""
    if not _NAME_PATTERN.match(name):
        raise OptionError(
            f"invalid store name {name!r}: use 1 to 64 characters from letters, digits, "
            "'_', '.' and '-', not starting with '-'"
        )
    return name


def parse_model_spec(text: str) -> ModelSpec:
    """Parse `KEY=PATH[,batch_size=B,min_batch_size=M,min_batch_timeout=T,device=D]`.

    Raises OptionError naming the part that is invalid.
    """
    head, _, tail = text.partition(",")
    key, separator, path = head.partition("=")
    if not separator or not key or not path:
        raise OptionError(f"invalid --model {text!r}: expected KEY=PATH[,setting=value...]")

    settings: dict[str, object] = {}
    for item in filter(None, tail.split(",")):
        setting, separator, value = item.partition("=")
        if not separator or not value:
            raise OptionError(f"invalid --model setting {item!r} in {text!r}: expected NAME=VALUE")

        if setting in _MODEL_INT_SETTINGS:
            try:
                number = int(value)
            except ValueError:
                raise OptionError(
                    f"invalid --model setting {item!r} in {text!r}: {setting} must be an integer"
                ) from None
            if number < 0:
                raise OptionError(
                    f"invalid --model setting {item!r} in {text!r}: {setting} must be >= 0"
                )
            settings[setting] = number
        elif setting in _MODEL_STR_SETTINGS:
            settings[setting] = value
        else:
            known = ", ".join(_MODEL_INT_SETTINGS + _MODEL_STR_SETTINGS)
            raise OptionError(
                f"unknown --model setting {setting!r} in {text!r}; known settings: {known}"
            )

    return ModelSpec(key=key, path=path, **settings)  # type: ignore[arg-type]
