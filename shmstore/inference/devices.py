"""Device names: the `--device` option of `shmstore serve` and a model's device setting."""

from __future__ import annotations

from typing import Any, List


def parse_worker_devices(option: str) -> List[str]:
    """Return the torch devices of `--device` ("cpu", "cuda", "cuda:0,cuda:1").

    Worker i runs on entry i modulo the list's length. "cuda" means cuda:0.
    """
    devices = []
    for part in (option or "cpu").split(","):
        name = part.strip().lower()
        if name == "cuda":
            name = "cuda:0"
        if name != "cpu" and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise ValueError(f"invalid device {part!r}: use cpu, cuda or cuda:N, "
                             f"comma-separated for several GPUs")
        devices.append(name)
    return devices


def model_device(setting: str, worker_device: str) -> Any:
    """Return the torch.device a model with device setting runs on in this worker.

    "CPU" runs on the CPU. "GPU" runs on the worker's GPU (cuda:0 for a CPU worker), and
    "GPU:N" on cuda:N. Raises ValueError when the setting needs a GPU that is not there.
    """
    import torch

    if setting == "CPU":
        return torch.device("cpu")

    if setting == "GPU":
        name = worker_device if worker_device.startswith("cuda") else "cuda:0"
    else:
        name = "cuda:" + setting.split(":", 1)[1]

    if not torch.cuda.is_available():
        raise ValueError(f"it is set for device {setting}, but this worker sees no GPU "
                         f"(torch.cuda.is_available() is False); store it with device='CPU'")
    index = int(name.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ValueError(f"it is set for device {setting}, but this worker sees only "
                         f"{torch.cuda.device_count()} GPU(s)")
    return torch.device(name)
