"""Decode stage on real videos: readers, lying headers, fps sampling, resizing."""
from pathlib import Path

import av
import numpy as np
import pytest

from flowprep import ConfigError, DecodeConfig, DecodeError
from flowprep.decode import READERS, check_video_file, open_reader, output_size, resize, sample_fps, to_gray

from conftest import VIDEOS

FACTS = {  # name: (frames, fps, (width, height)), from ../shared/data/MANIFEST.md
    "carphone_pristine.mp4": (120, 29.97, (176, 144)),
    "rubber-whale.mp4": (8, 1.0, (584, 388)),
    "mr-bubz.webm": (486, 30.0, (480, 480)),
}


@pytest.mark.parametrize("decoder", list(READERS))
@pytest.mark.parametrize("name", list(FACTS))
def test_every_reader_decodes_every_frame(decoder, name):
    frames, fps, size = FACTS[name]
    with open_reader(VIDEOS / name, decoder) as reader:
        decoded = list(reader.frames())
        assert reader.size == size and reader.fps == pytest.approx(fps, rel=1e-3)
    assert len(decoded) == frames
    times = [t for t, _ in decoded]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:]))
    assert decoded[0][1].shape == (size[1], size[0], 3) and decoded[0][1].dtype == np.uint8


def make_lying_clip(path: Path, keep_fraction: float = 1 / 3) -> None:
    """carphone remuxed with the index first, then cut: the header claims 120 frames, the data holds fewer."""
    full = path.with_suffix(".full.mp4")
    with av.open(str(VIDEOS / "carphone_pristine.mp4")) as src, av.open(str(full), "w",
                                                                        options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_a_header_that_lies_about_its_length_is_not_trusted(tmp_path):
    clip = tmp_path / "lying.mp4"
    make_lying_clip(clip)
    with open_reader(clip, "pyav") as reader:
        assert reader._stream.frames == 120  # what the container claims
        assert 0 < sum(1 for _ in reader.frames()) < 120
    with open_reader(clip, "decord") as reader, pytest.raises(DecodeError, match="lying.mp4: decord failed reading"):
        list(reader.frames())


def test_missing_empty_and_garbage_files_are_named(tmp_path):
    with pytest.raises(DecodeError, match="nothing.mp4: no such file"):
        check_video_file(tmp_path / "nothing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty.mp4: empty file"):
        check_video_file(tmp_path / "empty.mp4")
    (tmp_path / "text.avi").write_text("not a video")
    for decoder in READERS:
        with pytest.raises(DecodeError, match=f"text.avi: {decoder} cannot open it"):
            open_reader(tmp_path / "text.avi", decoder)


def fake_frames(times):
    return [(t, np.full((2, 2, 3), i, np.uint8)) for i, t in enumerate(times)]


def test_sampling_takes_the_frame_nearest_each_tick():
    frames = fake_frames([i / 30 for i in range(30)])  # one second at 30 fps
    picked = [int(f[0, 0, 0]) for _, f in sample_fps(frames, 10)]
    assert picked == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]


def test_sampling_above_the_source_rate_keeps_each_frame_once():
    frames = fake_frames([i / 25 for i in range(50)])
    assert [int(f[0, 0, 0]) for _, f in sample_fps(frames, 60)] == list(range(50))
    assert len(list(sample_fps(frames, None))) == 50


def test_fps_15_on_the_2997_fps_sample_gives_60_frames():
    # ticks k/15 up to the last frame's time (119/29.97 = 3.97 s): k = 0..59
    with open_reader(VIDEOS / "carphone_pristine.mp4", "decord") as reader:
        sampled = list(sample_fps(reader.frames(), 15))
    assert len(sampled) == 60
    assert [round(t * 29.97) for t, _ in sampled[:4]] == [0, 2, 4, 6]


@pytest.mark.parametrize("config, expected", [
    (DecodeConfig(), (176, 144)),
    (DecodeConfig(size=(340, 256)), (340, 256)),
    (DecodeConfig(short_side=72), (88, 72)),
])
def test_output_size(config, expected):
    assert output_size((176, 144), config) == expected


def test_short_side_of_a_portrait_video():
    assert output_size((144, 176), DecodeConfig(short_side=72)) == (72, 88)


def test_resize_and_gray_shapes():
    rgb = np.random.default_rng(0).integers(0, 255, (144, 176, 3), dtype=np.uint8)
    assert resize(rgb, (340, 256)).shape == (256, 340, 3)
    assert resize(to_gray(rgb), (88, 72)).shape == (72, 88)
    assert resize(rgb, (176, 144)) is rgb


@pytest.mark.parametrize("decoder, readers", [
    ("auto", ("pyav", "decord", "opencv")), ("opencv", ("opencv",)), ("decord, pyav", ("decord", "pyav")),
])
def test_decoder_fallback_lists(decoder, readers):
    assert DecodeConfig(decoder=decoder).readers == readers


@pytest.mark.parametrize("decoder", ["ffmpeg", "", "pyav,,nvdec"])
def test_unknown_decoders_are_named(decoder):
    with pytest.raises(ConfigError, match=f"decoder must be auto, or one or more of pyav, decord, opencv.*{decoder!r}"):
        DecodeConfig(decoder=decoder)
