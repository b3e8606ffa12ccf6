"""``logcap dlq``: list, show, replay and purge the dead letter queue.

Exit codes a script can rely on: 0 success (also: nothing to do); 1 some records could not
be replayed (they stay pending; run replay again); 2 bad usage (e.g. an unknown sink);
78 invalid configuration. Problems found while reading (a torn last record after a crash,
a damaged record, a ``*.dlq`` name that is not a segment's) are reported on stderr and do
not change the exit code.

A record counts as replayed only once its sink took it: ``write`` did not raise and
``flush`` reported no failure for it (a Kafka delivery timeout, a failed fsync). ``purge``
deletes a segment only if every record in it is marked replayed; a file it cannot read as
a segment is kept (``--all`` deletes it too).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from logcap.cli_common import config_option, load_or_exit
from logcap.config import Config
from logcap.dispatch.batch import Batch
from logcap.dispatch.encode import rfc3339
from logcap.dlq.reader import Position, StoredRecord, mark, read_at, segment_records
from logcap.dlq.record import BAD_HEADER, UNSUPPORTED, DlqRecord, Problem
from logcap.dlq.segments import dlq_directory, marks_path, segment_paths
from logcap.errors import DeliveryError
from logcap.sinks.routing import inputs_of, narrow, nothing_for_sink

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from logcap.sinks.base import Sink

EX_PARTIAL, EX_USAGE = 1, 2
_CANNOT_READ = "cannot be read"


def _unknown(problem: Problem) -> bool:
    """A file purge keeps (unless --all): what it holds is not known."""
    return problem.what in (BAD_HEADER, UNSUPPORTED) or problem.what.startswith(_CANNOT_READ)


def _warn(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(f"warning: {problem.path} at byte {problem.offset}: {problem.what}", err=True)
    problems.clear()


def _segments(config: Config) -> list[Path]:
    """The segments, oldest first; stray ``*.dlq`` names are reported and left alone."""
    strays: list[Path] = []
    segments = segment_paths(dlq_directory(config.data_dir), strays)
    for stray in strays:
        click.echo(f"warning: ignoring {stray}: not a DLQ segment name", err=True)
    return segments


def _records_in(segment: Path, problems: list[Problem] | None = None) -> Iterator[StoredRecord]:
    """The records of one segment; problems are reported (or collected in ``problems``)."""
    found: list[Problem] = []
    try:
        yield from segment_records(segment, found)
    except FileNotFoundError:  # deleted meanwhile (max_age, drop_oldest)
        pass
    except OSError as exc:
        found.append(Problem(segment, 0, f"{_CANNOT_READ} ({exc})"))
    if problems is not None:
        problems.extend(found)
    _warn(found)


def _records(config: Config, sink: str | None, reason: str | None) -> Iterator[StoredRecord]:
    for segment in _segments(config):
        for found in _records_in(segment):
            record = found.record
            if (sink is None or record.sink == sink) and (reason is None or record.kind == reason):
                yield found


def _entries(record: DlqRecord) -> list[Any]:
    payload = Batch.from_slot(memoryview(record.batch)).payload
    return [json.loads(line) for line in bytes(payload).splitlines()]


sink_option = click.option("--sink", default=None, help="Only records that failed for this sink.")
reason_option = click.option(
    "--reason",
    type=click.Choice(["permanent", "exhausted", "overflow"]),
    default=None,
    help="Only records that went to the DLQ for this reason.",
)


@click.group()
def dlq() -> None:
    """Inspect and replay the dead letter queue (data_dir/dlq)."""


@dlq.command("ls")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per segment.")
def list_segments(config_path: Path | None, as_json: bool) -> None:
    """Segments with their record counts, reasons, sinks and time range."""
    config = load_or_exit(config_path, secrets=False)  # never talks to a destination
    rows: list[dict[str, Any]] = []
    for segment in _segments(config):
        found = list(_records_in(segment))
        times = [f.record.written_ns for f in found]
        rows.append(
            {
                "segment": segment.name,
                "bytes": segment.stat().st_size,
                "records": len(found),
                "entries": sum(f.record.entries for f in found),
                "replayed": sum(f.replayed for f in found),
                "reasons": dict(Tally(f.record.kind for f in found)),
                "sinks": dict(Tally(f.record.sink for f in found)),
                "first": rfc3339(min(times)) if times else None,
                "last": rfc3339(max(times)) if times else None,
            }
        )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("the dead letter queue is empty")
        return
    for row in rows:
        reasons = ",".join(f"{k}={v}" for k, v in sorted(row["reasons"].items()))
        sinks = ",".join(f"{k}={v}" for k, v in sorted(row["sinks"].items()))
        click.echo(
            f"{row['segment']}  {row['bytes']:>10} B  {row['records']:>6} records  "
            f"{row['entries']:>8} entries  {row['replayed']:>6} replayed  "
            f"reasons {reasons or '-'}  sinks {sinks or '-'}  "
            f"{row['first'] or '-'} .. {row['last'] or '-'}"
        )


@dlq.command()
@config_option
@sink_option
@reason_option
@click.option("--pending", is_flag=True, help="Only records not replayed yet.")
def show(config_path: Path | None, sink: str | None, reason: str | None, pending: bool) -> None:
    """One JSON object per line per record, with its entries."""
    config = load_or_exit(config_path, secrets=False)  # never talks to a destination
    for found in _records(config, sink, reason):
        if pending and found.replayed:
            continue
        r = found.record
        click.echo(
            json.dumps(
                {
                    "segment": found.segment.name,
                    "offset": found.offset,
                    "sink": r.sink,
                    "reason": r.kind,
                    "error": r.reason,
                    "attempts": r.attempts,
                    "first_failure": rfc3339(r.first_failure_ns),
                    "written": rfc3339(r.written_ns),
                    "batch_seq": r.batch_seq,
                    "replayed": found.replayed,
                    "entries": _entries(r),
                },
                ensure_ascii=False,
            )
        )


@dlq.command()
@config_option
@sink_option
@reason_option
@click.option(
    "--to",
    "target",
    default=None,
    help="Deliver to this configured sink instead of the one each record names.",
)
def replay(
    config_path: Path | None, sink: str | None, reason: str | None, target: str | None
) -> None:
    """Deliver pending records directly to their sink; each is marked once delivered, so
    a second replay delivers nothing again."""
    config = load_or_exit(config_path)
    for name in (sink, target):
        if name is not None and name not in config.sinks:
            click.echo(f"error: no sink named {name!r} in the config", err=True)
            sys.exit(EX_USAGE)
    # positions (and entry counts, for the progress line) only: the records are read again
    # one at a time (a DLQ may be far larger than memory)
    todo = [
        (f.position, f.record.entries) for f in _records(config, sink, reason) if not f.replayed
    ]
    if not todo:
        click.echo("nothing to replay")
        return
    directory = dlq_directory(config.data_dir)
    sinks: dict[str, Sink] = {}
    outcomes: Tally[str] = Tally()
    entries = 0
    with _Progress(len(todo), sum(n for _, n in todo)) as progress:
        for position, count in todo:
            outcome = _replay_one(config, directory, position, target, sinks, progress.warn)
            outcomes[outcome] += 1
            entries += count if outcome == _DELIVERED else 0
            progress.step(count, failed=outcome == _FAILED)
    for built in sinks.values():
        built.close()
    gone, failed = outcomes[_GONE], outcomes[_FAILED]
    deleted = f"; {gone} deleted meanwhile (max_age, drop_oldest)" if gone else ""
    click.echo(
        f"replayed {outcomes[_DELIVERED]} records ({entries} entries); {failed} failed{deleted}"
    )
    if failed:
        sys.exit(EX_PARTIAL)


_DELIVERED, _FAILED, _GONE = "delivered", "failed", "gone"


def _replay_one(
    config: Config,
    directory: Path,
    position: Position,
    target: str | None,
    sinks: dict[str, Sink],
    warn: Callable[[str], None],
) -> str:
    """Deliver the record at ``position`` to its sink (``target`` if given, built once into
    ``sinks``) and mark it; the outcome is delivered, failed (left pending) or gone."""
    from logcap.metrics import NullBlock
    from logcap.sinks.registry import build_sink

    found = read_at(directory, position)
    if found is None:  # deleted meanwhile by max_age or drop_oldest
        return _GONE
    name = target or found.record.sink
    if name not in config.sinks:
        warn(
            f"warning: sink {name!r} is no longer configured; record at "
            f"{found.segment.name}:{found.offset} left pending"
        )
        return _FAILED
    if name not in sinks:
        sinks[name] = build_sink(config.sinks[name], NullBlock())
    error = _deliver(sinks[name], found.record, inputs_of(config.sinks[name].inputs))
    if error is not None:
        warn(f"warning: {found.segment.name}:{found.offset} to {name}: {error}")
        return _FAILED
    if not mark(found):
        warn(
            f"warning: {found.segment.name} was deleted (max_age, drop_oldest) while "
            f"its record at {found.offset} was replayed"
        )
    return _DELIVERED


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02}:{secs:02}"


class _Progress:
    """The replay's progress on stderr, redrawn in place, only when stderr is a terminal:
    records and entries done of the total, the entry rate, percent and ETA by entries (the
    work). Otherwise it prints nothing, so what scripts parse stays as it was."""

    def __init__(self, records: int, entries: int) -> None:
        self.records, self.entries = records, entries
        self.records_done = self.entries_done = self.failed = 0
        self.shown = sys.stderr.isatty()
        self.bar: ProgressBar[int] = click.progressbar(
            length=max(entries, 1),  # records of no entries: 0 % until finished, then 100 %
            label="replaying",
            file=sys.stderr,
            hidden=not self.shown,
            show_eta=False,  # ours, by entries from the first record (click's waits 1 s)
            width=0,  # the bar takes what the terminal leaves: the line never wraps
            item_show_func=lambda _: self._counts(),
        )

    def _counts(self) -> str:
        elapsed = max(time.time() - self.bar.start, 1e-3)
        rate = self.entries_done / elapsed
        left = self.entries - self.entries_done
        eta = f"  ETA {_clock(left / rate)}" if left and rate else ""
        failed = f"  {self.failed} failed" if self.failed else ""
        return (
            f"{self.records_done}/{self.records} records  "
            f"{self.entries_done}/{self.entries} entries  {rate:.0f} entries/s{eta}{failed}"
        )

    def step(self, entries: int, failed: bool) -> None:
        """One record done (delivered, failed or gone) holding ``entries`` entries."""
        self.records_done += 1
        self.entries_done += entries
        self.failed += failed
        self.bar.update(entries)
        if self.records_done == self.records:
            self.bar.finish()
            self.bar.render_progress()  # the last line says 100 %, whatever the counts

    def warn(self, message: str) -> None:
        # on a terminal, below the progress line (it stays as it was; the next one redraws)
        click.echo(("\n" if self.shown else "") + message, err=True)

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.render_finish()


def _deliver(sink: Sink, record: DlqRecord, inputs: frozenset[str] | None) -> DeliveryError | None:
    """Write one record, narrowed to the sink's ``inputs``, and flush: delivered only if
    neither raised nor reported a failure (flush reports what failed after write: a Kafka
    delivery timeout, a failed fsync). A record with nothing for the sink is delivered."""
    batch = narrow(Batch.from_slot(memoryview(record.batch)), inputs)
    if nothing_for_sink(batch):
        return None
    try:
        sink.write(batch)
        failures = sink.flush()
    except DeliveryError as exc:
        return exc
    return failures[0][1] if failures else None


@dlq.command()
@config_option
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Delete every segment, replayed or not (their entries are lost).",
)
def purge(config_path: Path | None, everything: bool) -> None:
    """Delete segments whose records were all replayed, except the newest (a running agent
    may be appending to it); --all deletes every segment, replayed or not."""
    config = load_or_exit(config_path, secrets=False)  # never talks to a destination
    removed = kept = 0
    segments = _segments(config)
    newest_kept = bool(segments) and not everything
    if newest_kept:
        # a running agent may be appending to the newest segment right now: leave it
        segments = segments[:-1]
    for segment in segments:
        problems: list[Problem] = []
        found = list(_records_in(segment, problems))
        unknown = any(map(_unknown, problems))
        if unknown and not everything:
            click.echo(f"warning: {segment} kept: it cannot be read as a segment", err=True)
        if everything or (not unknown and all(f.replayed for f in found)):
            segment.unlink(missing_ok=True)
            marks_path(segment).unlink(missing_ok=True)
            removed += 1
        else:
            kept += 1
    newest = "; the newest kept (the agent may be writing it)" if newest_kept else ""
    click.echo(f"purged {removed} segments; {kept} with pending records kept{newest}")
