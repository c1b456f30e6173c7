"""Command line: parses options and calls the library. Exit codes: 0 ok, 1 some videos failed or were not
processed, 2 usage, 3 the output storage failed (full, over quota, read-only, gone) or the input's object store did
(gone, refusing), 130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM: SLURM's time limit or scancel, docker
stop, kill)."""
from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__, annotations
from .batch import (ENGINES, EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_TERMINATED, BatchInterrupted, BatchStopped, Shard,
                    Terminated, discover, merge_reports, parse_shard, run_batch)
from .config import (DIRECTIONS, LAYOUTS, PACKS, VIDEO_EXTENSIONS, DecodeConfig, ExtractConfig, FlowConfig, StoreConfig,
                     parse_size)
from .errors import ConfigError, MissingDependencyError, OutputError
from .flow import ALGORITHMS, list_backends
from .store import Naming, ObjectStore, StorageOptions, is_url, parse_storage_options, require_local
from .verify import write_report
from .visualize import write_preview


# --direction's values -> StoreConfig.directions
DIRECTION_CHOICES = {"forward": ("forward",), "backward": ("backward",), "both": DIRECTIONS}


class LocalPath(click.Path):
    """click.Path that refuses a URL first, naming it (s3://b/flow would otherwise be a folder named 's3:')."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            require_local(value, param.human_readable_name if param is not None else "location")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return super().convert(value, param, ctx)


class Location(click.Path):
    """A local path (click.Path, with its checks), or an object store's URL whose fsspec package is installed
    (s3://bucket/flow; whether it exists is for the command to find out)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if is_url(value):
            try:
                return ObjectStore(value).url
            except ConfigError as exc:
                self.fail(str(exc), param, ctx)
        return super().convert(value, param, ctx)


class SizeType(click.ParamType):
    name = "WxH"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def _parse_params(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    params = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--param")
        params.append((name.strip(), value.strip()))
    return tuple(params)


def _storage_options(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, Any]:
    try:
        return parse_storage_options(values)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


# For every command that takes a URL: `StorageOptions.of(options, (location, ...)).apply()` before any work.
STORAGE_OPTION = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE", callback=_storage_options,
    help="An option of the object store's file system (s3fs: key, secret, token, endpoint_url, client_kwargs, ...) "
         "for every URL of the command, beside the AWS_* variables and fsspec's config; repeatable. A value that "
         "parses as JSON is that (true, 3, {\"region_name\": \"eu-west-1\"}). Never printed or recorded.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="flowprep")
def main() -> None:
    """flowprep: video datasets -> optical-flow training data for two-stream networks."""


@main.command()
@click.argument("source", type=Location(exists=True))
@click.argument("output", type=Location(file_okay=False))
@click.option("--algo", type=click.Choice(ALGORITHMS), default="tvl1", show_default=True, help="Flow algorithm.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or torch-cpu.")
@click.option("--impl", default=None,
              help="Implementation of the algorithm on the device (`flowprep backends` lists them). Default: "
                   "flowprep's numba TV-L1 on cpu; opencv: OpenCV's DualTVL1, bit-identical to mmaction2/TSN.")
@click.option("--preset", default=None, help="Named parameter set of the algorithm (see `flowprep backends`).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Override an algorithm parameter.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Flows per launch for batched backends (torch TV-L1; with --direction both: half as many pairs). "
                   "Default: 1 on torch-cpu, 16 on cuda.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sample frames at this rate (nearest frame to each k/fps). Default: the source rate.")
@click.option("--size", type=SizeType(), default=None, help="Resize frames to WIDTHxHEIGHT, e.g. 340x256.")
@click.option("--short-side", type=click.IntRange(min=2), default=None, help="Resize so the short side is S pixels.")
@click.option("--decoder", default="auto", show_default=True,
              help="auto (pyav, then decord, then opencv), one reader, or a fallback list such as 'decord,pyav'.")
@click.option("--bound", type=click.FloatRange(min=0, min_open=True), default=StoreConfig.bound, show_default=True,
              help="Quantization bound b in pixels: flow in [-b, b] maps to 0..255.")
@click.option("--quality", "jpeg_quality", type=click.IntRange(1, 100), default=StoreConfig.jpeg_quality,
              show_default=True,
              help="JPEG quality.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="separate", show_default=True,
              help="separate: flow_x/flow_y gray JPEGs; xy0: one (x, y, 0) colour JPEG per pair.")
@click.option("--flow-template", default=None, help="Flow file names, e.g. 'flow_{}_{:05d}.jpg'.")
@click.option("--direction", type=click.Choice(DIRECTION_CHOICES), default="forward", show_default=True,
              help="forward: flow k -> k+1; backward: k+1 -> k (for bi-directional stacks); both: each of them, "
                   "from the same decode.")
@click.option("--backward-template", default=None,
              help="Backward flow file names. Default: 'backflow_{}_{:05d}.jpg' (xy0: 'backflow_{:05d}.jpg').")
@click.option("--warp", is_flag=True,
              help="TSN's warped flow: remove the camera's motion (a homography) before computing the flow.")
@click.option("--img-template", default=StoreConfig.img_template, show_default=True, help="RGB frame file names.")
@click.option("--start-index", type=click.IntRange(min=0), default=StoreConfig.start_index, show_default=True)
@click.option("--rgb", is_flag=True, help="Also write the sampled RGB frames.")
@click.option("--pack", type=click.Choice(PACKS), default="dir", show_default=True,
              help="dir: a folder per video; zip: one uncompressed zip per video.")
@click.option("--no-fsync", "no_fsync", is_flag=True,
              help="Do not flush each video to the disk before it counts as finished (faster on slow disks; "
                   "after a power cut, run verify).")
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (local engine).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True)
@click.option("--address", default=None, help="Scheduler address for --engine dask/ray, e.g. tcp://host:8786.")
@click.option("--ext", "extensions", default=",".join(e[1:] for e in VIDEO_EXTENSIONS), show_default=True,
              help="Video file extensions searched in directories.")
@click.option("--overwrite", is_flag=True, help="Recompute videos that are already finished.")
@click.option("--shard", "shard_text", default=None, metavar="K/N|slurm",
              help="Process only part K (1..N) of N disjoint parts of the videos, for N jobs sharing OUTPUT; "
                   "'slurm': this array task's part (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT).")
@STORAGE_OPTION
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract(source: str, output: str, algo: str, device: str, impl: str | None, preset: str | None, params: tuple[str, ...],
            batch_size: int, fps: float | None, size: tuple[int, int] | None, short_side: int | None, decoder: str,
            bound: float, jpeg_quality: int, layout: str, flow_template: str | None, direction: str,
            backward_template: str | None, warp: bool, img_template: str, start_index: int, rgb: bool, pack: str,
            no_fsync: bool, n_jobs: int, engine: str, address: str | None, extensions: str, overwrite: bool,
            shard_text: str | None, storage_options: dict[str, Any], quiet: bool) -> None:
    """Extract flow of SOURCE (a video, a directory tree, a list file of paths or URLs, or an object store's
    prefix such as s3://bucket/videos) into OUTPUT (a folder, or an object store's prefix)."""
    try:
        storage = StorageOptions.of(storage_options, (source, output))
        storage.apply()
        config = ExtractConfig(
            decode=DecodeConfig(decoder=decoder, fps=fps, size=size, short_side=short_side),
            flow=FlowConfig(algo=algo, device=device, impl=impl, preset=preset, params=_parse_params(params),
                            batch_size=batch_size, warp=warp),
            store=StoreConfig(bound=bound, jpeg_quality=jpeg_quality, layout=layout, flow_template=flow_template,
                              backward_template=backward_template, directions=DIRECTION_CHOICES[direction],
                              img_template=img_template, start_index=start_index, rgb=rgb, pack=pack,
                              fsync=not no_fsync),
        )
        jobs = discover(source, output, [e.strip() for e in extensions.split(",") if e.strip()])
        shard = parse_shard(shard_text) if shard_text else Shard()
    except (ConfigError, MissingDependencyError) as exc:
        raise click.UsageError(str(exc)) from None
    if not jobs:
        raise click.UsageError(f"no videos with extensions {extensions} found in {source!r}")
    try:
        report = run_batch(jobs, output, config, engine=engine, n_jobs=n_jobs, address=address,
                           overwrite=overwrite, progress=not quiet, shard=shard, storage=storage)
    except (ConfigError, MissingDependencyError) as exc:
        raise click.UsageError(str(exc)) from None
    except BatchStopped as exc:
        click.echo(exc.report.summary(), err=True)
        click.echo(f"flowprep: {exc}", err=True)
        sys.exit(EXIT_STOPPED)
    except KeyboardInterrupt as exc:
        if isinstance(exc, BatchInterrupted):
            click.echo(exc.report.summary(), err=True)
        terminated = isinstance(exc, Terminated) or isinstance(exc, BatchInterrupted) and \
            exc.report.interrupted == "SIGTERM"
        click.echo(f"flowprep: {'terminated by SIGTERM' if terminated else 'interrupted'}: finished videos are kept; "
                   "rerun the same command to resume", err=True)
        sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    click.echo(report.summary(), err=True)
    sys.exit(1 if report.failed or report.not_processed else 0)


@main.command("report")
@click.argument("root", metavar="OUT", type=Location(exists=True, file_okay=False))
@STORAGE_OPTION
def report_command(root: str, storage_options: dict[str, Any]) -> None:
    """Add up the reports of the runs (or of all shards) that wrote into OUT. Exit 0 when every part reported
    and every video is done or skipped, 1 otherwise."""
    try:
        StorageOptions.of(storage_options, (root,)).apply()
        merged = merge_reports(root)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except OutputError as exc:  # an object store that refuses or is gone
        raise click.ClickException(str(exc)) from None
    click.echo(merged.summary())
    sys.exit(0 if merged.complete else 1)


@main.command()
def backends() -> None:
    """List every flow implementation, whether it can run here and why not, and which one is the default."""
    for info in list_backends():
        state = "usable" if info.usable else f"NOT usable: {info.reason}"
        presets = f" [presets: {', '.join(info.presets)}]" if info.presets else ""
        default = " (default)" if info.default else ""
        click.echo(f"{info.algo:10s} {info.device:10s} --impl {info.impl}{default}: {state}{presets}")
        for line in (info.description, info.why_default and f"default: {info.why_default}"):
            if line:
                click.echo(f"{'':22s}{line}")
        if info.implementation:
            click.echo(f"{'':22s}" + ", ".join(f"{k}: {v}" for k, v in info.implementation.items()))


@main.command("list")
@click.argument("root", metavar="OUT", type=Location(exists=True, file_okay=False))
@click.option("--out", "out_file", type=LocalPath(dir_okay=False, writable=True), default="-", show_default=True,
              help="Annotation list to write ('-': standard output).")
@click.option("--modality", type=click.Choice(annotations.MODALITIES), default="flow", show_default=True,
              help="num_frames counts flow pairs (flow) or RGB frames (rgb).")
@click.option("--classes", "class_file", type=LocalPath(exists=True, dir_okay=False), default=None,
              help="Class index file ('1 ApplyEyeMakeup' lines, as UCF101's classInd.txt, or one name a line). "
                   "Default: labels from the sorted class folder names.")
@click.option("--split", "split_file", type=LocalPath(exists=True, dir_okay=False), default=None,
              help="Only the videos of this split list (UCF101 trainlist01.txt style), in its order.")
@click.option("--skip-missing", is_flag=True, help="With --split, leave out split videos not found under OUT "
                                                   "(with a warning) instead of failing.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="separate", show_default=True,
              help="For trees without meta.json (other tools).")
@click.option("--flow-template", default=None,
              help="For trees without meta.json, e.g. '{}_{:05d}.jpg' for mmaction2's script (x_00001.jpg).")
@click.option("--img-template", default=StoreConfig.img_template, show_default=True, help="For trees without meta.json.")
@click.option("--start-index", type=click.IntRange(min=0), default=StoreConfig.start_index, show_default=True,
              help="For trees without meta.json: 0 for denseflow.")
@STORAGE_OPTION
def list_videos(root: str, out_file: str, modality: str, class_file: str | None, split_file: str | None,
                skip_missing: bool, layout: str, flow_template: str | None, img_template: str,
                start_index: int, storage_options: dict[str, Any]) -> None:
    """Write a TSN/mmaction2 annotation list (relative_dir num_frames label) of the videos under OUT."""
    try:
        StorageOptions.of(storage_options, (root,)).apply()
        store = StoreConfig(layout=layout, flow_template=flow_template, img_template=img_template,
                            start_index=start_index)
        class_index = annotations.read_class_index(class_file) if class_file else None
        split = annotations.read_split(split_file) if split_file else None
        entries = annotations.list_annotations(root, Naming.from_config(store), modality=modality,
                                               class_index=class_index, split=split)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    if entries.missing:
        missing = entries.missing
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        message = f"{len(missing)} of {len(split)} videos of {split_file} are not under {root}: {shown}"
        if not skip_missing:
            raise click.ClickException(message + " (--skip-missing leaves them out)")
        click.echo(f"warning: {message}; left out", err=True)
    with click.open_file(out_file, "w") as stream:
        annotations.write_annotations(entries, stream)
    click.echo(f"{entries.videos} videos, {entries.classes} classes -> {out_file}", err=True)


@main.command()
@click.argument("output", type=Location(exists=True))
@click.option("--roundtrip", type=click.IntRange(min=0), default=0, show_default=True, metavar="K",
              help="Recompute K random pairs per video from its source and check the JPEG round-trip error.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the round-trip pair choice.")
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes checking videos side by side.")
@STORAGE_OPTION
def verify(output: str, roundtrip: int, seed: int, n_jobs: int, storage_options: dict[str, Any]) -> None:
    """Check that every video output under OUTPUT is complete and readable. Exit 0 clean, 1 on any problem."""
    try:
        storage = StorageOptions.of(storage_options, (output,))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        sys.exit(0 if write_report(output, click.echo, roundtrip, seed=seed, n_jobs=n_jobs, storage=storage) else 1)
    except OutputError as exc:  # an object store that refuses or is gone (each video's own problems are lines)
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("video_output", type=Location())  # a directory, a .zip, or its base path (as `list` writes it)
@click.option("--out", "target", required=True, type=LocalPath(dir_okay=False),
              help="preview.png (one pair), or .gif / .mp4 (a sequence of pairs).")
@click.option("--pair", type=click.IntRange(min=1), default=None,
              help="Pair number, the first pair is 1 (PNG default: the middle pair; GIF/MP4 default: the first).")
@click.option("--max-pairs", type=click.IntRange(min=1), default=100, show_default=True,
              help="Pairs in a GIF/MP4.")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="forward", show_default=True,
              help="Which stored flow to show.")
@STORAGE_OPTION
def show(video_output: str, target: str, pair: int | None, max_pairs: int, direction: str,
         storage_options: dict[str, Any]) -> None:
    """Render VIDEO_OUTPUT's flow as Middlebury colour code beside the x/y images and RGB frame."""
    try:
        StorageOptions.of(storage_options, (video_output,)).apply()
        click.echo(write_preview(video_output, target, index=None if pair is None else pair - 1,
                                 max_pairs=max_pairs, direction=direction))
    except (ConfigError, OutputError) as exc:
        raise click.UsageError(str(exc)) from None
