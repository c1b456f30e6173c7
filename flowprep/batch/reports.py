"""What a run did (BatchReport, its summary and its record files) and what the runs of one tree did (merge_reports)."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import ExtractConfig
from ..errors import ConfigError, StorageError
from ..source import stopped_by_input
from ..store import ObjectStore, as_location
from ..store.objects import object_times, read_object
from .shards import Shard
from .video import VideoJob, VideoResult

FAILURES_NAME = "failures.jsonl"
REPORT_NAME = "report.json"
SUMMARY_LISTED = 20  # videos not processed named one by one in the summary on stderr


@dataclass
class BatchReport:
    """What one run did; `seconds` is wall time, `pairs` counts the flow pairs this run computed."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pairs: int = 0
    seconds: float = 0.0
    interrupted: str = ""  # the signal that stopped the run early ("SIGINT": Ctrl-C, "SIGTERM"), "" if none
    stopped: str = ""  # why the run stopped early: the output storage, or the input's store, failed (BatchStopped)
    unwritten: str = ""  # why failures.jsonl or report.json could not be written; "" when they were
    mismatched: list[str] = field(default_factory=list)  # skipped outputs whose settings or source differ
    failures: list[VideoResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # of done videos: source cut short, broken output replaced
    not_processed: list[str] = field(default_factory=list)  # sources of the jobs that got no result
    record: str = REPORT_NAME  # the name of this run's report file

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: VideoResult) -> None:
        if result.status == "stopped":  # not the video's fault: it counts as not processed
            self.stopped = self.stopped or result.reason
            return
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "done":
            self.pairs += result.pairs
            if result.warning:
                self.warnings.append(result.warning)
        elif result.status == "failed":
            self.failures.append(result)
        elif result.reason:
            self.mismatched.append(f"{result.output}: {result.reason}")

    def summary(self) -> str:
        """Counts, then every settings difference, failure and warning, and the videos not processed (the first
        SUMMARY_LISTED of them: report.json lists them all)."""
        left = len(self.not_processed)
        why = (interruption(self.interrupted) if self.interrupted else
               "stopped: reading the input failed" if stopped_by_input(self.stopped) else
               "stopped: the output storage failed" if self.stopped
               else "the engine returned no result for them: rerun to process them")
        lines = [f"{self.total} videos: {self.done} done, {self.skipped} skipped, {self.failed} failed"
                 + (f", {left} not processed ({why})" if left else "")
                 + f"; {self.pairs} flow pairs in {self.seconds:.1f} s ({self.pairs_per_second:.2f} pairs/s)"]
        lines += _listing(self.mismatched, [f.reason for f in self.failures], self.warnings, self.not_processed,
                          self.record)
        if self.unwritten:
            lines.append(f"  NOT WRITTEN {self.unwritten}")
        return "\n".join(lines)

    def note_unprocessed(self, jobs: Sequence[VideoJob], reported: set[str]) -> None:
        """Record the jobs whose output is not in `reported` (the outputs that got a result) as not processed."""
        self.not_processed = [job.source for job in jobs if job.output not in reported]


def _listing(mismatched: Sequence[str], failures: Sequence[str], warnings: Sequence[str],
             not_processed: Sequence[str], record: str) -> list[str]:
    """A summary's KEPT, FAILED and WARNING lines, then the first SUMMARY_LISTED videos not processed (all are
    in `record`)."""
    lines = [f"  KEPT {m}" for m in mismatched]
    lines += [f"  FAILED {reason}" for reason in failures]
    lines += [f"  WARNING {w}" for w in warnings]
    lines += [f"  NOT PROCESSED {source}" for source in not_processed[:SUMMARY_LISTED]]
    if len(not_processed) > SUMMARY_LISTED:
        lines.append(f"  ... and {len(not_processed) - SUMMARY_LISTED} more not processed (all are listed in "
                     f"{record})")
    return lines


def interruption(signal_name: str) -> str:
    return "interrupted" if signal_name == "SIGINT" else f"terminated by {signal_name}"


def record_names(shard: Shard) -> tuple[str, str]:
    """(failures file, report file) names of a run of `shard`: failures.jsonl and report.json for the whole
    list, failures.shard-K-of-N.jsonl and report.shard-K-of-N.json for a shard."""
    if shard.count == 1:
        return FAILURES_NAME, REPORT_NAME
    return f"failures.{shard.tag}.jsonl", f"report.{shard.tag}.json"


@dataclass
class MergedReport:
    """The report files of one output tree added up: a run of the whole list, or the shards of one N.

    `parts` names the report files read; `missing` the shards of an N that have none (running, killed, or never
    started); `counts` sums total, done, skipped, failed and pairs; the lists are the parts' lists, joined.
    """

    root: Path | str  # a URL's str on object stores
    parts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    not_processed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ended_early: list[str] = field(default_factory=list)  # parts that were interrupted or stopped
    superseded: dict[int, list[str]] = field(default_factory=dict)  # N -> report files of older runs of N shards

    @property
    def complete(self) -> bool:
        """Every part reported, every video done or skipped."""
        return bool(self.parts) and not (self.missing or self.failures or self.not_processed or self.ended_early)

    def summary(self) -> str:
        c = self.counts
        lines = [f"{self.root}: {len(self.parts)} report(s) ({', '.join(self.parts) or 'none'}): {c['total']} "
                 f"videos: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed, "
                 f"{len(self.not_processed)} not processed; {c['pairs']} flow pairs"]
        lines += [f"  MISSING {name}: no report (still running, killed, or never started; rerun that shard)"
                  for name in self.missing]
        lines += [f"  ENDED EARLY {name}" for name in self.ended_early]
        lines += [f"  SUPERSEDED {', '.join(names)} (an older run of {count} shards: not counted)"
                  for count, names in sorted(self.superseded.items())]
        lines += _listing(self.mismatched, [f["reason"] for f in self.failures], self.warnings, self.not_processed,
                          ", ".join(self.parts))
        lines.append("complete" if self.complete else "INCOMPLETE")
        return "\n".join(lines)


def merge_reports(out_root: str | os.PathLike) -> MergedReport:
    """Add up the reports under `out_root`: report.json, or the report.shard-K-of-N.json of the N whose newest
    report is the newest (a run of the shards of another N, later, supersedes those of the former N; each run of
    the whole list removes the shards' records, each shard run removes report.json). ConfigError when there is no
    report at all."""
    out_root = as_location(out_root)
    merged = MergedReport(out_root)
    records = _record_times(out_root)
    shards: dict[int, dict[int, str]] = {}
    for name in records:
        found = re.fullmatch(r"report\.shard-(\d+)-of-(\d+)\.json", name)
        if found:
            shards.setdefault(int(found.group(2)), {})[int(found.group(1))] = name
    if shards:
        count = max(shards, key=lambda n: max(records[name] for name in shards[n].values()))
        parts = [(Shard(k, count), shards[count].get(k)) for k in range(1, count + 1)]
        merged.superseded = {n: [shards[n][k] for k in sorted(shards[n])] for n in shards if n != count}
    elif REPORT_NAME in records:
        parts = [(Shard(), REPORT_NAME)]
    else:
        raise ConfigError(f"{str(out_root)!r} holds no {REPORT_NAME} nor report.shard-K-of-N.json: no run finished "
                          "there yet")
    for shard, name in parts:
        if name is None:
            merged.missing.append(record_names(shard)[1])
            continue
        try:
            data = json.loads(_read_record(out_root, name))
            failures = [json.loads(line) for line in _read_record(out_root, record_names(shard)[0]).splitlines()
                        if line.strip()]
        except (OSError, ValueError, StorageError) as exc:
            merged.missing.append(f"{name} (unreadable: {exc})")
            continue
        merged.parts.append(name)
        merged.counts.update({key: data.get(key, 0) for key in ("total", "done", "skipped", "failed", "pairs")})
        merged.failures += failures
        merged.not_processed += data.get("not_processed", [])
        merged.warnings += data.get("warnings", [])
        merged.mismatched += data.get("settings_mismatch", [])
        if data.get("interrupted") or data.get("stopped"):
            merged.ended_early.append(f"{name}: " + (interruption(data.get("signal") or "SIGINT")
                                                          if data.get("interrupted") else
                                                          f"stopped ({data['stopped']})"))
    return merged


def _record_times(out_root: Path | str) -> dict[str, int]:
    """{name: modification time in ns} of the report files in the folder `out_root` (or objects directly under
    the prefix URL)."""
    if isinstance(out_root, str):
        return object_times(out_root, "report*.json")
    return {path.name: path.stat().st_mtime_ns for path in out_root.glob("report*.json")}


def _read_record(out_root: Path | str, name: str) -> str:
    """The text of record `name`; OSError, or StorageError on object stores, when it cannot be read."""
    if isinstance(out_root, str):
        return read_object(f"{out_root}/{name}").decode()
    return (out_root / name).read_text()


class RecordTarget(Protocol):
    """Where a run's records go (batch.roots' LocalRoot and ObjectRoot)."""

    path: Path | ObjectStore

    def lost(self) -> str:
        """Why nothing may be written there any more (a lost mount), or ""."""

    def put(self, name: str, content: bytes, durable: bool) -> None:
        """Replace record `name` by `content` whole; OSError or StorageError when the storage refuses."""


def write_report(target: RecordTarget, report: BatchReport, config: ExtractConfig, engine: str, n_jobs: int,
                 shard: Shard) -> None:
    """failures.jsonl (one JSON object per failed video), then report.json (record_names(shard)), each replaced
    whole; when the storage refuses, or `target` is lost (a lost mount: nothing is written beneath the bare
    mount point), report.unwritten names what was not written and why, and no temporary is left."""
    lines = [json.dumps({"source": f.source, "output": f.output, "reason": f.reason}) + "\n"
             for f in report.failures]
    data = {
        "total": report.total, "done": report.done, "skipped": report.skipped, "failed": report.failed,
        "interrupted": bool(report.interrupted), "signal": report.interrupted or None, "stopped": report.stopped,
        "pairs": report.pairs,
        "seconds": round(report.seconds, 3),
        "pairs_per_second": round(report.pairs_per_second, 3), "settings_mismatch": report.mismatched,
        "warnings": report.warnings, "not_processed": report.not_processed,
        "engine": engine, "jobs": n_jobs, "shard": str(shard) if shard.count > 1 else None, "config": asdict(config),
    }
    records = dict(zip(record_names(shard), ("".join(lines).encode(), json.dumps(data, indent=1).encode())))
    lost = target.lost()
    if lost:
        report.stopped = report.stopped or lost
        problem = lost
    else:
        problem = ""
        for name, content in list(records.items()):
            try:
                target.put(name, content, config.store.fsync)
            except StorageError as exc:
                problem = str(exc)
                break
            except OSError as exc:
                problem = str(exc.strerror or exc)
                break
            del records[name]
    if records:
        report.unwritten = (f"{' and '.join(records)} could not be written in {target.path} ({problem}): the "
                            "summary above is this run's only record")
