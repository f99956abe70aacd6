"""The training progress bar: steps without a time budget, time left with one."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from molgan.training.progress import Progress
from molgan.training.trainer import Trainer

STATS = {"d_loss": 0.123, "g_loss": -0.3}
EVALUATION = {"validity": 0.85, "uniqueness": 0.7}


def test_a_time_budget_shows_time_used_and_left_not_an_eta_for_the_steps() -> None:
    bar = Progress(50_000, 15 * 60, file=io.StringIO())
    bar.advance(1234, 332.4)
    text = str(bar)
    assert "5:32/15:00, 9:28 left" in text
    assert "step 1234/50000" in text
    assert text.lstrip().startswith("37%")
    # What tqdm would have said for 48,766 more steps at this rate.
    assert "<" not in text and "it/s" not in text
    bar.show(STATS, EVALUATION)
    assert "d=0.12 g=-0.30 valid=0.85 uniq=0.70" in str(bar)
    bar.close()


def test_a_resumed_run_starts_with_its_time_used_and_ends_at_the_budget() -> None:
    bar = Progress(100, 60.0, step=40, elapsed_s=45.0, file=io.StringIO())
    assert "0:45/1:00, 0:15 left | step 40/100" in str(bar)
    bar.advance(41, 61.5)  # the last step overran the budget
    assert "1:00/1:00, 0:00 left | step 41/100" in str(bar)
    assert str(bar).lstrip().startswith("100%")
    bar.close()


def test_long_budgets_show_hours() -> None:
    bar = Progress(10, 3 * 3600, file=io.StringIO())
    bar.advance(1, 65.0)
    assert "1:05/3:00:00, 2:58:55 left" in str(bar)
    bar.close()


def test_without_a_budget_the_bar_counts_steps() -> None:
    bar = Progress(30, None, step=10, file=io.StringIO())
    bar.advance(12, 1.0)
    bar.show(STATS, {})
    text = str(bar)
    assert "12/30" in text
    assert "d=0.12" in text and "valid=nan" in text
    bar.close()


def test_a_run_with_max_minutes_shows_its_budget(
    tmp_path: Path, debug_config: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    config = debug_config("train.steps=6", "train.max_minutes=10", "train.log_every=2")
    Trainer(config, tmp_path, progress=True).train()
    err = capsys.readouterr().err
    assert "/10:00, " in err and " left | step 6/6 | d=" in err
