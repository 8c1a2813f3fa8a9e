"""Analysis process of the ocean demo: reads the simulation's fields from the store while it runs.

It follows the ranks' step counters and reads each new step's predicted eddy kinetic energy
(EKE) with zero-copy gets. When every rank has finished, it writes a PNG map of the last step's
EKE and a table of the per-step timings the ranks published. Then it checks a sample of columns
against the model called directly from Python.

Keys it reads (all published by `ocean_proxy`, one per rank R): `step_rR` (int32 [step,
first row, last row, nx]), `eke_features_rR` (float32 (columns, 4)), `eke_pred_rR` (float32
(columns, 1)), `timings_rR` (float64 (3, steps): put, run_model and unpack seconds).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from shmstore.client import Client
from shmstore.errors import KeyNotFoundError

logger = logging.getLogger("shmstore.demo.analysis")

POLL_INTERVAL_S = 0.02


@dataclass
class RankState:
    """Record of one rank: its rows and the last step the analysis has seen."""

    rank: int
    step: int = 0
    first_row: int = 0
    last_row: int = 0
    nx: int = 0


@dataclass
class StepRecord:
    """Global figures of one step, computed from what the analysis read during the run."""

    step: int
    seen_at: float
    mean_log_eke: float


@dataclass
class Observation:
    ranks: List[RankState]
    records: List[StepRecord] = field(default_factory=list)
    reads: int = 0


def read_step(client: Client, rank: int) -> Optional[np.ndarray]:
    try:
        return np.array(client.get_tensor(f"step_r{rank}"))
    except KeyNotFoundError:
        return None


def follow_run(client: Client, nranks: int, steps: int, timeout_s: float) -> Observation:
    """Poll the ranks' step counters until each reaches steps, reading every new global step."""
    observation = Observation([RankState(rank) for rank in range(nranks)])
    deadline = time.monotonic() + timeout_s
    last_global_step = 0

    while time.monotonic() < deadline:
        for state in observation.ranks:
            counter = read_step(client, state.rank)
            if counter is not None:
                state.step, state.first_row, state.last_row, state.nx = (int(v) for v in counter)

        global_step = min(state.step for state in observation.ranks)
        if global_step > last_global_step:
            last_global_step = global_step
            predictions = [client.get_tensor(f"eke_pred_r{r}") for r in range(nranks)]
            observation.reads += len(predictions)
            mean = float(np.mean([float(np.mean(p)) for p in predictions]))
            observation.records.append(StepRecord(global_step, time.monotonic(), mean))
            logger.info("step %d: mean predicted log EKE %.4f", global_step, mean)

        if global_step >= steps:
            return observation
        time.sleep(POLL_INTERVAL_S)

    raise TimeoutError(
        f"the ranks did not reach step {steps} within {timeout_s:.0f} s; last steps seen: "
        f"{[state.step for state in observation.ranks]}")


def assemble_map(client: Client, ranks: List[RankState]) -> np.ndarray:
    """Return the last step's predicted log EKE as a (rows, nx) array over the whole grid."""
    bands = []
    for state in ranks:
        rows = state.last_row - state.first_row + 1
        prediction = np.asarray(client.get_tensor(f"eke_pred_r{state.rank}"))
        # Column n of a rank is (i, j) with i (longitude) varying fastest.
        bands.append(prediction[:, 0].reshape(rows, state.nx))
    return np.concatenate(bands, axis=0)


def write_png(eke_map: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    image = axes.imshow(eke_map, origin="lower", extent=(0, 360, -80, 80), aspect="auto",
                        cmap="magma")
    figure.colorbar(image, ax=axes, label="predicted log EKE")
    axes.set_xlabel("longitude (degrees east)")
    axes.set_ylabel("latitude (degrees north)")
    axes.set_title("Eddy kinetic energy predicted by the model, last step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def timing_table(client: Client, ranks: List[RankState], steps: int) -> List[str]:
    """Format the per-step put, run_model and unpack times, averaged over ranks, in ms."""
    timings = np.stack([np.asarray(client.get_tensor(f"timings_r{state.rank}"))
                        for state in ranks])
    columns = sum(state.nx * (state.last_row - state.first_row + 1) for state in ranks)
    mean = timings.mean(axis=0)
    lines = ["step   put ms   run_model ms   unpack ms   inferences/s (all ranks)"]
    for step in range(steps):
        put_s, run_s, unpack_s = mean[:, step]
        slowest = float(timings[:, :, step].sum(axis=1).max())
        rate = columns / slowest if slowest > 0 else float("nan")
        lines.append(f"{step + 1:4d} {put_s * 1e3:8.3f} {run_s * 1e3:14.3f} "
                     f"{unpack_s * 1e3:11.3f} {rate:15.0f}")
    return lines


def check_sample(client: Client, ranks: List[RankState], model_path: Path, rows_per_rank: int,
                 seed: int) -> float:
    """Run the model directly on a random sample of each rank's last features.

    Returns the largest relative difference from the values the service returned.
    """
    import torch

    model = torch.jit.load(str(model_path), map_location="cpu")
    model.eval()
    generator = np.random.default_rng(seed)
    worst = 0.0
    for state in ranks:
        features = np.asarray(client.get_tensor(f"eke_features_r{state.rank}"))
        served = np.asarray(client.get_tensor(f"eke_pred_r{state.rank}"))
        rows = generator.choice(features.shape[0], size=min(rows_per_rank, features.shape[0]),
                                replace=False)
        # The model rewrites some of its input columns in place, so it gets its own copy.
        sample = torch.from_numpy(np.ascontiguousarray(features[rows]))
        with torch.no_grad():
            direct = model(sample.clone()).numpy()
        difference = np.abs(direct - served[rows]) / np.maximum(np.abs(direct), 1e-30)
        worst = max(worst, float(difference.max()))
    return worst


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shmstore.demo.analysis",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, required=True, help="number of simulation ranks")
    parser.add_argument("--steps", type=int, required=True, help="steps the ranks run")
    parser.add_argument("--model", type=Path, required=True,
                        help="TorchScript file of the model the workers run, for the check")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG and table")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the ranks to finish (default 600)")
    parser.add_argument("--sample", type=int, default=64,
                        help="columns per rank checked against the model (default 64)")
    parser.add_argument("--rtol", type=float, default=1e-5,
                        help="largest relative difference the check accepts (default 1e-5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="analysis: %(message)s", stream=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    with Client() as client:
        while not client.poll_tensor("grid_shape", 50, 2000):
            pass
        started = time.monotonic()
        observation = follow_run(client, args.ranks, args.steps, args.timeout)
        elapsed = time.monotonic() - started

        eke_map = assemble_map(client, observation.ranks)
        png = args.out / "eke_last_step.png"
        write_png(eke_map, png)
        table = timing_table(client, observation.ranks, args.steps)
        (args.out / "timings.txt").write_text("\n".join(table) + "\n")
        worst = check_sample(client, observation.ranks, args.model, args.sample, seed=0)

    columns = eke_map.size
    summary = list(table)
    summary.append(f"grid {eke_map.shape[1]} x {eke_map.shape[0]} = {columns} columns, "
                   f"{args.ranks} ranks, {args.steps} steps")
    summary.append(f"throughput: {columns * args.steps / elapsed:.0f} inferences/s over the "
                   f"whole run ({elapsed:.1f} s wall, as seen by the analysis process, which "
                   f"read {observation.reads} predictions during the run)")
    records = observation.records
    if len(records) >= 2 and records[-1].seen_at > records[0].seen_at:
        # The first step includes the workers' model load and warm-up, so it is left out.
        steady_s = records[-1].seen_at - records[0].seen_at
        steady_steps = records[-1].step - records[0].step
        summary.append(f"throughput after step {records[0].step}: "
                       f"{columns * steady_steps / steady_s:.0f} inferences/s "
                       f"({steady_steps} steps in {steady_s:.2f} s)")
    passed = worst <= args.rtol
    summary.append(f"check: {args.sample} columns per rank against the model called directly "
                   f"from Python: max relative difference {worst:.2e} (tolerance "
                   f"{args.rtol:.0e}) {'PASS' if passed else 'FAIL'}")
    summary.append(f"map of the last step's EKE: {png.resolve()}")
    summary.append(f"timings table: {(args.out / 'timings.txt').resolve()}")

    print("\n".join(summary))
    # The demo driver prints this file again once the launch has stopped everything.
    (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
