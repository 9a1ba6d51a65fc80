"""Progress of long steps: lines every interval off a terminal (fake clock), a tqdm bar on one,
nothing in quiet mode."""

from __future__ import annotations

import gc
import io
import time

import pytest

from ptune import progress as P
from ptune.progress import Progress, format_duration, set_quiet, track


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch):
    monkeypatch.delenv("PTUNE_QUIET", raising=False)
    set_quiet(None)
    yield
    set_quiet(None)


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_lines_every_interval_with_rate_and_time_left():
    clock, out = Clock(), io.StringIO()
    with Progress(100, "train", "step", stream=out, tty=False, clock=clock, heartbeat=False) as bar:
        assert bar.mode == "lines"
        for _ in range(10):  # 10 steps in 20 s: nothing yet
            clock.t += 2
            bar.update()
        assert out.getvalue() == ""
        for _ in range(5):  # 30 s reached at step 15
            clock.t += 2
            bar.update()
        assert _lines(out) == ["train: 15/100 steps (15%), 2 s/step, about 2m50s left, 30s elapsed"]
        for _ in range(14):  # 28 s more: still one line only
            clock.t += 2
            bar.update()
        assert len(_lines(out)) == 1
        clock.t += 2
        bar.note("loss 0.5")
        bar.update()
        assert _lines(out)[-1] == "train: 30/100 steps (30%), 2 s/step, about 2m20s left, 1m00s elapsed, loss 0.5"
        clock.t += 5
    assert _lines(out)[-1] == "train: 30/100 steps (30%), done in 1m05s, loss 0.5"
    assert len(_lines(out)) == 3


def test_fast_rate_unknown_total_and_resumed_count():
    clock, out = Clock(), io.StringIO()
    bar = Progress(None, "predict", "row", initial=500, stream=out, tty=False, clock=clock, heartbeat=False)
    clock.t += 40
    bar.update(200)
    assert _lines(out) == ["predict: 700 rows, 5 rows/s, 40s elapsed"]  # the rate counts only this run's rows
    bar.close()
    bar.close()  # closing twice writes one final line
    assert _lines(out)[1:] == ["predict: 700 rows, done in 40s"]


def test_short_step_writes_nothing():
    clock, out = Clock(), io.StringIO()
    for _ in track(range(50), desc="eval", stream=out, tty=False, clock=clock, heartbeat=False):
        clock.t += 0.1
    assert out.getvalue() == ""


def test_track_wraps_an_iterable_and_counts_its_length():
    clock, out = Clock(), io.StringIO()
    seen = []
    for x in track(range(3), desc="probe", unit="relation", stream=out, tty=False, clock=clock,
                   heartbeat=False, interval=1):
        clock.t += 1
        seen.append(x)
    assert seen == [0, 1, 2]
    lines = _lines(out)
    assert lines[0].startswith("probe: 1/3 relations (33%), 1 relations/s, about 2s left")
    assert lines[-1] == "probe: 3/3 relations (100%), done in 3s"


def test_quiet_mode_and_disabled_write_nothing(monkeypatch):
    clock, out = Clock(), io.StringIO()
    set_quiet(True)
    bar = Progress(10, "x", stream=out, tty=True, clock=clock, heartbeat=False)
    assert bar.mode == "off"
    clock.t += 100
    bar.update(10)
    bar.close()
    set_quiet(None)
    monkeypatch.setenv("PTUNE_QUIET", "1")
    assert P.is_quiet()
    monkeypatch.setenv("PTUNE_QUIET", "0")
    assert not P.is_quiet()
    bar = Progress(10, "x", stream=out, tty=False, enabled=False, clock=clock, heartbeat=False)
    assert bar.mode == "off"
    clock.t += 100
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


def test_terminal_draws_a_tqdm_bar():
    out = io.StringIO()
    with Progress(4, "world", "epoch", stream=out, tty=True) as bar:
        assert bar.mode == "bar"
        bar.update(4)
        bar.note("loss 1.2")
    text = out.getvalue()
    assert "world" in text and "4/4" in text and "\r" in text


def test_heartbeat_writes_while_one_unit_is_slow():
    out = io.StringIO()
    with Progress(2, "slow", stream=out, tty=False, interval=0.05):
        deadline = time.monotonic() + 5
        while len(_lines(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = _lines(out)
    assert len(lines) >= 3 and lines[0].startswith("slow: 0/2 its (0%)") and "done in" in lines[-1]


def test_an_unclosed_progress_stops_its_timer():
    out = io.StringIO()
    bar = Progress(2, "dropped", stream=out, tty=False, interval=0.02)
    stop = bar._stop
    del bar
    gc.collect()
    time.sleep(0.1)
    assert stop is not None and not stop.is_set()
    before = out.getvalue()
    time.sleep(0.1)
    assert out.getvalue() == before  # the timer saw the progress gone and ended


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 + 7 * 60, "1h07m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_cli_quiet_flag_turns_progress_off(tmp_path):
    from ptune.cli import main

    assert not P.is_quiet()
    assert main(["--quiet", "inspect", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert P.is_quiet()


def test_a_bar_nested_in_another_is_not_left_on_the_terminal():
    out = io.StringIO()
    with Progress(2, "outer", stream=out, tty=True) as outer:
        with Progress(3, "inner", stream=out, tty=True) as inner:
            assert outer._bar.leave and not inner._bar.leave
        assert not P._open_bars[1:]
    assert P._open_bars == []
