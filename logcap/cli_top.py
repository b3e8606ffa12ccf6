"""``logcap top``: a live view of a running agent, read from its ``/metrics``, like ``htop``.

A background thread scrapes the API every ``--interval`` seconds, so a slow or dead agent
never delays a key press; the screen is redrawn from the last two answers by
:func:`render`, a pure function from two scrapes to lines of text (unit tested without a
terminal). Curses redraws only the cells that changed, so nothing flickers. While the API
does not answer, the header says why and the last answer stays on screen; scraping goes
on until the agent is back. ``q`` or Ctrl-C quits with exit code 0.
"""

from __future__ import annotations

import contextlib
import curses
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

import click

from logcap.top import (
    CIRCUIT,
    CIRCUIT_NAMES,
    CPU,
    CRASH_LOOP,
    ERRORS,
    RECEIVED,
    RESTARTS,
    RING_CAPACITY,
    RING_USED,
    RSS,
    SENT,
    SUPERVISOR,
    UP,
    Poller,
    Scrape,
    rate,
)

COMPONENTS_HEADER = (
    f"{'ROLE':<10} {'NAME':<14} {'KIND':<10} {'IN/s':>8} {'OUT/s':>8} {'ERRORS':>7} "
    f"{'ERR/s':>6} CIRCUIT"
)
PROCESSES_HEADER = f"{'PROCESS':<14} {'ROLE':<10} {'CPU%':>6} {'RSS':>8} {'RESTARTS':>8} UP"
UNREACHABLE = "agent unreachable"


@dataclass(frozen=True)
class Frame:
    """Everything one screen shows: the last two answers and what happened since."""

    address: str
    interval: float
    previous: Scrape | None  # the answer before ``current``; None until there are two
    current: Scrape | None  # the last answer; None until the agent first answered
    error: str | None  # why the last scrape failed; None if it succeeded
    wall: float  # time.time() of the redraw, shown in the header
    now: float  # time.monotonic() of the redraw, to age the last answer


def render(frame: Frame, width: int = 80, height: int = 24) -> list[str]:
    """The screen as at most ``height`` lines of at most ``width`` characters."""
    lines = [_title(frame)]
    if frame.error is not None:
        seen = ""
        if frame.current is not None:
            seen = f"; last answer {_duration(frame.now - frame.current.at)} ago"
        lines.append(f"{UNREACHABLE}: {frame.error} (retrying every {frame.interval:g}s{seen})")
    current = frame.current
    if current is None:
        lines.append("waiting for the first answer from the agent")
    else:
        lines += _component_rows(frame.previous, current)
        lines += _wrap("rings", _rings(current), width)
        lines += _wrap("", _queues(current), width)
        lines += _process_rows(frame.previous, current)
    return _fit(lines, width, height)


def _title(frame: Frame) -> str:
    parts = [f"logcap top  {frame.address}"]
    if frame.error is None and frame.current is not None and frame.current.uptime is not None:
        parts.append(f"up {_duration(frame.current.uptime)}")
    parts.append(time.strftime("%H:%M:%S", time.localtime(frame.wall)))
    parts.append(f"every {frame.interval:g}s  q quits")
    return "  ".join(parts)


def _component_rows(previous: Scrape | None, current: Scrape) -> list[str]:
    received, sent = current.by_component(RECEIVED), current.by_component(SENT)
    errors, circuits = current.by_component(ERRORS), current.by_component(CIRCUIT)
    rows = [COMPONENTS_HEADER]
    for c in current.components():
        state = circuits.get(c.name)
        circuit = "" if state is None else CIRCUIT_NAMES.get(int(state), f"?{state:g}")
        in_rate = rate(previous, current, RECEIVED, c.name) if c.name in received else None
        out_rate = rate(previous, current, SENT, c.name) if c.name in sent else None
        rows.append(
            f"{c.role:<10} {_cut(c.name, 14):<14} {_cut(c.kind, 10):<10} "
            f"{_per_second(in_rate):>8} {_per_second(out_rate):>8} "
            f"{_count(errors.get(c.name)):>7} "
            f"{_per_second(rate(previous, current, ERRORS, c.name)):>6} {circuit:<9}".rstrip()
        )
    return rows


def _rings(current: Scrape) -> list[str]:
    capacity = current.by_label(RING_CAPACITY, "ring")
    items = []
    for ring, used in current.by_label(RING_USED, "ring").items():
        slots = capacity.get(ring)
        fill = f" {100 * used / slots:.0f}%" if slots else ""
        items.append(f"{ring} {used:g}/{'?' if slots is None else f'{slots:g}'}{fill}")
    return items or ["none reported"]


def _queues(current: Scrape) -> list[str]:
    def gauge(name: str) -> float | None:
        return current.value(name)

    lag_seconds = gauge("logcap_checkpoint_lag_seconds")
    return [
        f"checkpoint lag {_bytes(gauge('logcap_checkpoint_lag_bytes'))} "
        f"{'-' if lag_seconds is None else f'{lag_seconds:.1f}s'}",
        f"retry heap {_count(gauge('logcap_retry_heap_entries'))} entries "
        f"{_bytes(gauge('logcap_retry_heap_bytes'))}",
        f"spool {_count(gauge('logcap_retry_spool_batches'))} batches "
        f"{_bytes(gauge('logcap_retry_spool_bytes'))}",
        f"dlq {_bytes(gauge('logcap_dlq_size_bytes'))}",
    ]


def _process_rows(previous: Scrape | None, current: Scrape) -> list[str]:
    up, restarts = current.by_component(UP), current.by_component(RESTARTS)
    crash_loop, rss = current.by_component(CRASH_LOOP), current.by_component(RSS)
    rows = [PROCESSES_HEADER]
    for c in current.processes():
        cpu = rate(previous, current, CPU, c.name)
        if c.role == SUPERVISOR:
            state = "-"
        elif c.name not in up:
            state = "?"
        elif up[c.name] and crash_loop.get(c.name):
            state = f"up loop {crash_loop[c.name]:g}"  # restarted after crashing in a row
        else:
            state = "up" if up[c.name] else "DOWN"
        rows.append(
            f"{_cut(c.name, 14):<14} {c.role:<10} "
            f"{'-' if cpu is None else f'{100 * cpu:.1f}':>6} {_bytes(rss.get(c.name)):>8} "
            f"{_count(restarts.get(c.name)) if c.role != SUPERVISOR else '-':>8} {state}"
        )
    return rows


def _wrap(label: str, items: list[str], width: int) -> list[str]:
    """``label`` then ``items`` two spaces apart, on as many lines as ``width`` needs (an
    item wider than the screen is cut later by :func:`_fit`)."""
    line = f"{label}  " if label else ""
    indent, lines, empty = " " * len(line), [], True
    for item in items:
        if not empty and len(line) + 2 + len(item) > width:
            lines.append(line)
            line, empty = indent, True
        line += ("" if empty else "  ") + item
        empty = False
    return [*lines, line.rstrip()]


def _fit(lines: list[str], width: int, height: int) -> list[str]:
    """Cut lines to ``width``; past ``height`` lines, the last one says how many are hidden."""
    if len(lines) > height >= 1:
        hidden = len(lines) - height + 1
        lines = [*lines[: height - 1], f"... {hidden} more lines: enlarge the terminal"]
    return [line[:width] for line in lines[: max(height, 0)]]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _scaled(value: float, units: tuple[str, ...], step: float) -> str:
    for unit in units[:-1]:
        if abs(value) < step:
            return f"{value:.0f}{unit}" if unit == units[0] else f"{value:.1f}{unit}"
        value /= step
    return f"{value:.1f}{units[-1]}"


def _count(value: float | None) -> str:
    return "-" if value is None else _scaled(value, ("", "k", "M", "G"), 1000)


def _per_second(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if 0 < value < 10 else _count(value)


def _bytes(value: float | None) -> str:
    return "-" if value is None else _scaled(value, ("B", "K", "M", "G", "T"), 1024)


def _duration(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _frame(poller: Poller, address: str) -> Frame:
    previous, current, error = poller.latest()
    return Frame(address, poller.interval, previous, current, error, time.time(), time.monotonic())


def _draw(screen: curses.window, lines: list[str], width: int) -> None:
    emphasis = {
        COMPONENTS_HEADER[:width]: curses.A_REVERSE,
        PROCESSES_HEADER[:width]: curses.A_REVERSE,
    }
    screen.erase()  # erase, not clear: curses sends only changes
    for y, line in enumerate(lines):
        attr = curses.A_BOLD if line.startswith(UNREACHABLE) else emphasis.get(line, 0)
        # the bottom-right cell cannot be written without scrolling; it stays blank
        with contextlib.suppress(curses.error):
            screen.addnstr(y, 0, line, width, attr)
    screen.refresh()


def _live(poller: Poller, address: str) -> None:
    def loop(screen: curses.window) -> None:
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
            curses.curs_set(0)
        screen.timeout(100)  # getch waits at most 0.1 s, so q is answered at once
        shown = -1
        while True:
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == curses.KEY_RESIZE or poller.generation != shown:
                shown = poller.generation
                height, width = screen.getmaxyx()
                _draw(screen, render(_frame(poller, address), width, height), width)

    curses.wrapper(loop)


def _quit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds through curses.wrapper, which restores the terminal


@click.command()
@click.option(
    "--api",
    default="http://127.0.0.1:9598",
    show_default=True,
    help="The agent's API (api.address), with or without http://.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between scrapes; rates are measured over this time.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print one screen as plain text (two scrapes an interval apart) and exit: "
    "exit code 1 if the agent did not answer.",
)
def top(api: str, interval: float, once: bool) -> None:
    """Live view of a running agent: rates, errors, circuits, rings, queues, processes."""
    base_url = (api if "://" in api else f"http://{api}").rstrip("/")
    address = base_url.split("://", 1)[1]
    poller = Poller(base_url, interval)
    if once:
        poller.run_twice()
        frame = _frame(poller, address)
        click.echo("\n".join(render(frame, width=80, height=1000)))
        sys.exit(1 if frame.error is not None else 0)
    if not sys.stdout.isatty():
        raise click.UsageError("logcap top needs a terminal; use --once for a plain snapshot")
    signal.signal(signal.SIGTERM, _quit_on_sigterm)
    poller.start()
    try:
        _live(poller, address)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how an operator leaves top: not an error
    finally:
        poller.stop()
