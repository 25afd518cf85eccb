"""A logging window of training metrics, summed on the device and read once per log line;
and the TensorBoard log that `train.logger=tensorboard` writes beside metrics.jsonl.

Reading a GPU tensor on the host (`.item()`, `float()`, `bool()`) waits for every kernel queued
before it, so a loop that read its loss every step would leave the GPU idle while the host
prepares the next step. The window keeps running sums (and the first non-finite loss) as
device tensors; `read` and `check_finite` are the only places that copy them to the host, and
the loop calls them every `train.log_every` steps and before each checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

TENSORBOARD_FOLDER = "tensorboard"  # RUN/tensorboard/: the event files


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last checkpoint."""


class MetricWindow:
    """Per-step outputs of a task (`{"loss": ..., <scalar metrics>}`) averaged over a window.

    A metric may be absent from some steps (multi-task sampling): each is averaged over the
    steps that logged it.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        # First non-finite loss since the last check: (step, loss value), both on the device.
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    def add(self, out: dict[str, torch.Tensor], step: int) -> None:
        """Add one step's outputs; no host sync."""
        for key, value in out.items():
            # `0 + value`: a new tensor, never the output itself, which CUDA graphs
            # (train.compile=reduce-overhead) overwrite on the next step.
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
            self.counts[key] = self.counts.get(key, 0) + 1
        loss = out["loss"].detach().float()
        bad = ~torch.isfinite(loss)
        if self._bad_step is None:
            self._bad_step = torch.where(bad, step, -1)
            self._bad_loss = loss.clone()
            return
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_loss = torch.where(first, loss, self._bad_loss)

    def first_nonfinite(self) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite loss added since the last `read`, or None.
        Reads two scalars from the device."""
        if self._bad_step is None:
            return None
        step = int(self._bad_step)
        return None if step < 0 else (step, float(self._bad_loss))

    def read(self) -> dict[str, float]:
        """The window's means (one copy from the device for all of them); starts a new window."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k].reshape(()) for k in keys]).tolist() if keys else []
        means = {k: v / self.counts[k] for k, v in zip(keys, values)}
        self.sums, self.counts = {}, {}
        self._bad_step = self._bad_loss = None
        return means


def check_tensorboard() -> None:
    """Refuse `train.logger=tensorboard` in one line when the tensorboard package is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:  # torch's own message asks for the tensorboard package
        from selfsup.config import ConfigError

        raise ConfigError(
            "train.logger=tensorboard needs the tensorboard package: "
            "pip install 'selfsup[tensorboard]'"
        ) from err


class TensorBoardLog:
    """Event files in `RUN/tensorboard/`: every metrics.jsonl record as scalars (tag: the
    record's key, `loss`, `lr`, `images_per_sec`, `<task>/loss`, ...; step: its `step`), and
    the task's view grids as images.

    A resumed run (`start_step` > 0) appends to the same folder; TensorBoard then drops the
    events earlier sessions logged after the checkpoint (`purge_step`), as metrics.jsonl
    drops their lines, so no step appears twice.
    """

    def __init__(self, run_folder: str | Path, start_step: int):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(Path(run_folder) / TENSORBOARD_FOLDER), purge_step=start_step + 1
        )

    def scalars(self, record: dict) -> None:
        """One metrics.jsonl record (its `step` and numbers) as scalars."""
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def images(self, step: int, grids: dict[str, torch.Tensor]) -> None:
        """{name: (3, H, W) float image in [0, 1]} as images `views/<name>` at `step`."""
        for name, grid in grids.items():
            self.writer.add_image(f"views/{name}", grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
