"""The progress bar of a training run.

A run stops at ``train.steps`` or at its time budget ``train.max_minutes``, whichever comes
first. Without a budget the bar counts steps, as usual. With one, the budget is nearly always
what ends the run (``train.steps`` is then set high), so the bar measures time instead: the
time used against the budget and the time left, with the step count beside it. An ETA for
``train.steps`` would only say how long the run could have taken.

    37%|###6      | 5:32/15:00, 9:28 left | step 1234/50000 | d=0.12 g=-0.30 valid=0.85 uniq=0.70
"""

from __future__ import annotations

import math
from typing import IO, Any

from tqdm.auto import tqdm


def _clock(seconds: float) -> str:
    """``0:05``, ``9:28``, ``1:02:05``: minutes and seconds, hours when there are some."""
    hours, rest = divmod(int(max(0.0, seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Shows a run's progress on stderr (or ``file``); does nothing unless ``enabled``."""

    def __init__(
        self,
        steps: int,
        budget_s: float | None,
        *,
        step: int = 0,
        elapsed_s: float = 0.0,
        enabled: bool = True,
        file: IO[str] | None = None,
    ) -> None:
        self.steps = steps
        self.budget_s = budget_s
        self._step = step
        self._elapsed_s = elapsed_s
        self._latest = ""
        if budget_s is None:
            self._bar = tqdm(total=steps, initial=step, unit="step", disable=not enabled, file=file)
        else:
            self._bar = tqdm(
                total=budget_s,
                initial=min(elapsed_s, budget_s),
                bar_format="{percentage:3.0f}%|{bar}| {desc}",
                disable=not enabled,
                file=file,
            )
            self._bar.set_description_str(self._budget_text(), refresh=False)

    def _budget_text(self) -> str:
        assert self.budget_s is not None
        used = min(self._elapsed_s, self.budget_s)
        text = (
            # Time used rounds down and time left up, so that the two add up to the budget.
            f"{_clock(used)}/{_clock(self.budget_s)}, {_clock(math.ceil(self.budget_s - used))} left"
            f" | step {self._step}/{self.steps}"
        )
        return f"{text} | {self._latest}" if self._latest else text

    def advance(self, step: int, elapsed_s: float) -> None:
        """The run is at ``step`` after ``elapsed_s`` seconds of training (resumed parts included)."""
        steps_done = step - self._step
        self._step, self._elapsed_s = step, elapsed_s
        if self.budget_s is None:
            self._bar.update(steps_done)
        else:
            # The text first: the update below redraws the bar when it is due.
            self._bar.set_description_str(self._budget_text(), refresh=False)
            self._bar.update(min(elapsed_s, self.budget_s) - self._bar.n)

    def show(self, stats: dict[str, float], evaluation: dict[str, Any]) -> None:
        """The latest losses and the validity and uniqueness of the latest evaluation."""
        # No critic loss in a run without critic updates (train.n_critic: 0).
        values = {"d": f"{stats['d_loss']:.2f}"} if "d_loss" in stats else {}
        # Nor a generator loss while the critic warms up (train.critic_warmup_steps).
        values |= {"g": f"{stats['g_loss']:.2f}"} if "g_loss" in stats else {}
        values |= {
            "valid": f"{evaluation.get('validity', float('nan')):.2f}",
            "uniq": f"{evaluation.get('uniqueness', float('nan')):.2f}",
        }
        if self.budget_s is None:
            self._bar.set_postfix(values)
        else:
            self._latest = " ".join(f"{key}={value}" for key, value in values.items())
            self._bar.set_description_str(self._budget_text())

    def close(self) -> None:
        self._bar.close()

    def __str__(self) -> str:
        return str(self._bar)
