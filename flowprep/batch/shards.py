"""Shards: the K-th of N disjoint, deterministic parts of a video list (SLURM arrays sharing one output tree)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..store import is_url
from .video import VideoJob



@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count` disjoint parts of a video list, for N jobs sharing one output tree."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and isinstance(self.index, int) and 1 <= self.index <= self.count):
            raise ConfigError(f"shard must be K/N with 1 <= K <= N, got {self.index!r}/{self.count!r}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """'' for the whole list, else 'shard-K-of-N': in the names of this shard's report, failures and lock."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"

    def owns(self, relative_output: str) -> bool:
        """Whether the video whose output is `relative_output` (relative to the output root, '/'-separated) is in
        this part: by a hash of that path alone, so a video keeps its part when others are added or removed
        (for the same N), and every machine agrees without sharing anything."""
        digest = hashlib.blake2b(relative_output.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> Shard:
    """'K/N' (1-based K), or 'slurm': this SLURM array task's part, from SLURM_ARRAY_TASK_ID and
    SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX; _MIN, default 0, is part 1; a _STEP is honoured). ConfigError quoting
    the text or naming the variables that are missing."""
    if text.strip().lower() == "slurm":
        return _slurm_shard(environ)
    index, sep, count = text.partition("/")
    try:
        numbers = int(index), int(count)
    except ValueError:
        numbers = None
    if not sep or numbers is None:
        raise ConfigError(f"shard must be K/N (e.g. 2/8, K from 1) or 'slurm', got {text!r}")
    return Shard(*numbers)


def _slurm_shard(environ: Mapping[str, str]) -> Shard:
    def number(name: str, default: int | None = None) -> int:
        value = environ.get(name)
        if value is None or value == "":
            if default is None:
                raise ConfigError(f"--shard slurm: {name} is not set; is this a SLURM array job (sbatch --array)?")
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"--shard slurm: {name} is {value!r}, not a whole number") from None

    task, first, step = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_MIN", 0), \
        number("SLURM_ARRAY_TASK_STEP", 1)
    if "SLURM_ARRAY_TASK_COUNT" in environ:
        count = number("SLURM_ARRAY_TASK_COUNT")
    else:
        count = (number("SLURM_ARRAY_TASK_MAX") - first) // step + 1
    return Shard((task - first) // step + 1, count)


def select_shard(jobs: Sequence[VideoJob], out_root: str | os.PathLike, shard: Shard) -> list[VideoJob]:
    """The jobs of `shard`, in their order; the parts of all K for one N are disjoint and cover `jobs`."""
    if shard.count == 1:
        return list(jobs)
    return [job for job in jobs if shard.owns(_relative(job.output, out_root))]


def _relative(output: str, out_root: str | os.PathLike) -> str:
    if is_url(output):  # the same relative path as a local tree's, so a video keeps its part on either
        root = str(out_root).rstrip("/") + "/"
        return output[len(root):] if output.startswith(root) else output
    out_root = Path(out_root)
    try:
        return Path(output).relative_to(out_root).as_posix()
    except ValueError:  # an output outside the root (a hand-made job): its own path decides
        return Path(output).as_posix()
