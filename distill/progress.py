"""What a training run prints: one progress bar, with the loss and the reward margin as they go.

TRL's trainers print their whole metrics dict at every logged step (about 50 lines of
`{'loss': '1.538', 'grad_norm': ...}` per round, between the other progress bars). Here the
trainer's own printing is replaced by one bar per run whose postfix holds the last loss and, where
the method logs them, the reward margin (DPO's `rewards/margins`) and the mean reward (GRPO's
`reward`). `distill.verbose` (`--verbose`) writes each raw metrics line above the bar as well.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

SHOWN = {"loss": "loss", "rewards/margins": "margin", "reward": "reward"}


class StepProgress(TrainerCallback):
    """A tqdm bar over the run's optimiser steps, its postfix the latest loss and rewards."""

    def __init__(self, desc: str, verbose: bool = False) -> None:
        self.desc = desc
        self.verbose = verbose
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar = tqdm(total=state.max_steps or None, desc=self.desc, unit="step")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        if self.verbose:
            self.bar.write(str(logs))
        shown = {label: f"{logs[key]:.3g}" for key, label in SHOWN.items() if isinstance(logs.get(key), (int, float))}
        if shown:
            self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def show_progress(trainer: Any, desc: str, verbose: bool) -> None:
    """Replace the trainer's printing (its own bar and per-step dicts) with one StepProgress bar."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepProgress(desc, verbose))
