"""Reading each training step's loss on the host without stalling a GPU.

Why: the trainer checks every step's loss for NaN or infinity and reports it. Read at once (``loss.item()``) the
host waits for the whole step to finish on the device, and the device then idles while the host prepares and
queues the next step (draws the paths, writes their codes, launches the optimizer and the forward): on a fast GPU
that gap is a large share of a step. Here, on a GPU, the loss is copied to pinned host memory in stream order and
read one step later, once the device has reached it, so the host queues step ``s + 1`` while the device runs step
``s``. The optimizer must then not apply a step whose loss is not finite before the host knows: the trainer hands
the fused AdamW a device flag (``found_inf``, as ``torch.amp.GradScaler`` does) that this module raises on the
first non-finite loss and keeps raised, so that step and every later one leave the weights and the optimizer's
state as they were.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import torch

Tensor = torch.Tensor


def read_lag(device: torch.device, precision: str) -> int:
    """How many steps late the trainer reads losses: 1 on a GPU, 0 on a CPU (where reading at once stalls nothing)
    and under fp16 (whose ``GradScaler`` sets the optimizer's ``found_inf`` itself)."""
    return 1 if device.type == "cuda" and precision != "fp16" else 0


class LossReads:
    """The losses of optimizer steps on ``device``, read on the host ``lag`` steps late (0 or 1). With a lag,
    :attr:`skip_flag` (for a fused optimizer's ``found_inf``) is raised on the device by the first non-finite
    loss."""

    def __init__(self, device: torch.device, lag: int) -> None:
        self.lag = lag
        self.skip_flag: Optional[Tensor] = torch.zeros((), device=device) if lag else None
        self._pending: deque[tuple[int, Tensor, Optional[torch.cuda.Event]]] = deque()

    def push(self, step: int, loss: Tensor) -> None:
        """Queue the read of step ``step``'s ``loss`` (a scalar on the device), and raise the skip flag if it is not
        finite."""
        loss = loss.detach().float()
        if self.skip_flag is not None:
            torch.maximum(self.skip_flag, (~torch.isfinite(loss)).float(), out=self.skip_flag)
        if not loss.is_cuda:
            self._pending.append((step, loss.clone(), None))
            return
        host = torch.empty((), pin_memory=True)
        host.copy_(loss, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(loss.device))  # the copy's stream, whichever device is current
        self._pending.append((step, host, done))

    def ready(self) -> list[tuple[int, float]]:
        """``(step, loss)`` of the queued reads beyond the lag, oldest first (waiting for the device to reach them)."""
        return self._take(len(self._pending) - self.lag)

    def drain(self) -> list[tuple[int, float]]:
        """Every queued read (waiting for the device to reach the last); none is left queued."""
        return self._take(len(self._pending))

    def _take(self, count: int) -> list[tuple[int, float]]:
        out = []
        for _ in range(max(0, count)):
            step, host, done = self._pending.popleft()
            if done is not None:
                done.synchronize()
            out.append((step, host.item()))
        return out
