"""A stand-in for the ML-EKE model that the project builds itself, for demos and benchmarks.

The published ML-EKE closure maps N grid columns with 4 features each, float32 (N, 4), to one
eddy kinetic energy estimate per column, (N, 1). `build_eke_like_model` saves a small
TorchScript MLP with that interface: it normalises the inputs, runs three dense layers and
returns (N, 1). The weights come from a fixed seed, so every build gives the same weights
and outputs. They are random, not trained, so the values carry no physical meaning.
"""

from __future__ import annotations

import os
from typing import Union

SEED = 20261204
FEATURES = 4
HIDDEN = 64


def build_eke_like_model(path: Union[str, os.PathLike], hidden: int = HIDDEN,
                         seed: int = SEED) -> str:
    """Save the ML-EKE stand-in (float32 (N, 4) -> (N, 1)) as TorchScript at path.

    Returns path as a str. Raises ImportError when torch is not installed.
    """
    import torch
    from torch import nn

    class EkeLikeModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.5, -0.1, 2.0, 0.01]))
            self.register_buffer("scale", torch.tensor([1.5, 0.8, 3.0, 0.05]))
            self.layers = nn.Sequential(
                nn.Linear(FEATURES, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers((x - self.mean) / self.scale)

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = EkeLikeModel().eval()
    finally:
        torch.random.set_rng_state(generator_state)

    scripted = torch.jit.script(model)
    scripted.save(os.fspath(path))
    return os.fspath(path)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Save the ML-EKE stand-in TorchScript model.")
    parser.add_argument("path", help="output file, for example eke_like.pt")
    arguments = parser.parse_args()
    print(build_eke_like_model(arguments.path))


if __name__ == "__main__":
    main()
