"""Every video heser reads or writes, on real sample clips: probing, decoding (the crop stage's
sampled frames too, byte for byte as OpenCV decoded them), H.264 with the source's audio copied
and cut, the synthetic-media tags, atomic writes, damaged inputs."""

from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from heser.data.media import MediaError
from heser.data.video_io import (
    SYNTHETIC_SOURCE_TYPE,
    VideoReader,
    VideoWriter,
    probe_video,
    read_frames,
    read_metadata,
    save_image,
)
from tests.conftest import sample_path

TALKING = "videos/tpsmm_driving_asian_man.mp4"  # 410x412, 25 fps, 169 frames, AAC audio
SILENT = "videos/lp_d0_asian_man_greenscreen.mp4"  # 512x512, 25 fps, 78 frames, no audio
ODD_RATE = "videos/vr1_young_asian_man_suit.mp4"  # 700x700, 1350/61 fps, AAC, video starts late
BT709 = "videos/lp_d10_woman_long_black_hair.mp4"  # tagged BT.709
SHORT = 20  # frames encoded per test


def first_frames(name: str, count: int = SHORT) -> list[np.ndarray]:
    return list(islice(read_frames(sample_path(name)), count))


def write_video(out: Path, frames: list[np.ndarray], rate: Fraction, **kwargs) -> Path:
    height, width = frames[0].shape[:2]
    with VideoWriter(out, rate, width, height, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return out


def audio_packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        return [p for p in container.demux(container.streams.audio[0]) if p.size]


def test_probe_real_clips():
    talking = probe_video(sample_path(TALKING))
    assert (talking.width, talking.height, talking.frame_count) == (410, 412, 169)
    assert talking.rate == 25 and talking.fps == 25.0 and talking.has_audio
    assert talking.duration_s == pytest.approx(169 / 25)
    silent = probe_video(sample_path(SILENT))
    assert (silent.width, silent.height, silent.frame_count, silent.has_audio) == (512, 512, 78,
                                                                                   False)
    odd = probe_video(sample_path(ODD_RATE))
    assert odd.rate == Fraction(1350, 61) and odd.fps == pytest.approx(22.1311, abs=1e-4)


def test_probe_counts_frames_when_the_container_does_not_say(tmp_path: Path):
    # Matroska declares no frame count: 20 packets remuxed from a real clip are counted
    mkv = tmp_path / "clip.mkv"
    with av.open(str(sample_path(SILENT))) as source, av.open(str(mkv), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in islice(source.demux(source.streams.video[0]), SHORT):
            packet.stream = stream
            out.mux(packet)
    assert probe_video(mkv).frame_count == SHORT


@pytest.mark.parametrize("name", [TALKING, BT709])
def test_frames_are_rgb_and_the_bytes_opencv_decodes(name: str):
    # the crop stage read with OpenCV before; its crops must not change (BT.601 even for a
    # BT.709-tagged stream, see the module docstring)
    capture = cv2.VideoCapture(str(sample_path(name)))
    for rgb in first_frames(name, 3):
        ok, bgr = capture.read()
        assert ok and rgb.dtype == np.uint8 and rgb.shape == bgr.shape
        assert np.array_equal(rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    mead = sample_path("videos/mead_M030_front_angry_level3_001.mp4")
    assert sum(1 for _ in read_frames(mead)) == probe_video(mead).frame_count


def test_reader_samples_with_a_stride_and_a_cap():
    reader = VideoReader(sample_path("videos/mead_W009_front_angry_level3_001.mp4"))
    frames = list(reader.frames(stride=5, max_frames=10))
    assert [i for i, _ in frames] == list(range(0, 50, 5))
    assert frames[0][1].shape == (256, 256, 3)
    assert reader.info.fps == 25 and not reader.info.truncated
    everything = list(VideoReader(reader.path).frames(stride=10, max_frames=1000))
    assert len(everything) == -(-reader.info.frame_count // 10)


def test_reader_keeps_the_frames_of_a_truncated_file_and_notes_it(tmp_path: Path):
    path = _bad_file(tmp_path, "truncated")  # probe_video and read_frames refuse it
    reader = VideoReader(path)
    frames = list(reader.frames(stride=4, max_frames=32))
    assert len(frames) == 11 and reader.info.truncated
    assert reader.info.notes == ["truncated: stream ended at frame 44 of 169 the container "
                                 "declares"]


def test_reader_rejects_missing_unreadable_and_too_small_videos(tmp_path: Path):
    with pytest.raises(MediaError, match="missing.mp4: file not found"):
        VideoReader(_bad_file(tmp_path, "missing"))
    with pytest.raises(MediaError, match=r"text.mp4: not a readable video \(corrupt, truncated "
                                         r"or unsupported container\)"):
        VideoReader(_bad_file(tmp_path, "text"))
    with pytest.raises(MediaError, match=r"image too small \(256x256"):
        VideoReader(sample_path("videos/mead_W009_front_angry_level3_001.mp4"), min_side=300)


@pytest.mark.parametrize("name", [TALKING, ODD_RATE])
def test_writes_frames_rate_audio_and_tags(tmp_path: Path, name: str):
    source = probe_video(sample_path(name))
    frames = first_frames(name)
    out = write_video(tmp_path / "out.mp4", frames, source.rate, crf=18,
                      audio_from=sample_path(name), metadata={"target": "clip.mp4"})
    meta = probe_video(out)
    assert (meta.frame_count, meta.width, meta.height) == (SHORT, source.width, source.height)
    assert meta.rate == source.rate and meta.has_audio
    with av.open(str(out)) as container:  # frame i shows at i / rate, exactly
        times = [frame.time for frame in container.decode(video=0)]
    assert times == pytest.approx([i / float(source.rate) for i in range(SHORT)])
    decoded = list(read_frames(out))
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, frames)]) < 3
    # the audio is copied bit for bit, and stops with the last frame (within one AAC packet)
    copied, original = audio_packets(out), audio_packets(sample_path(name))
    assert [bytes(p) for p in copied] == [bytes(p) for p in original[:len(copied)]]
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        audio_end = float((audio.start_time + audio.duration) * audio.time_base)
    assert meta.duration_s <= audio_end < meta.duration_s + 1024 / 44100
    tags = read_metadata(out)
    assert tags["DigitalSourceType"] == SYNTHETIC_SOURCE_TYPE
    assert tags["synthetic"] == "true" and tags["software"].startswith("heser ")
    assert "Synthetic media" in tags["comment"] and tags["target"] == "clip.mp4"


def test_without_audio_source_has_no_audio(tmp_path: Path):
    out = write_video(tmp_path / "out.mp4", first_frames(SILENT), Fraction(25))
    meta = probe_video(out)
    assert not meta.has_audio and meta.frame_count == SHORT
    assert read_metadata(out)["DigitalSourceType"] == SYNTHETIC_SOURCE_TYPE


def test_odd_size_is_padded_by_one_pixel(tmp_path: Path):
    # yuv420p H.264 cannot hold an odd size: the last column and row are repeated
    frames = [frame[:411, :409] for frame in first_frames(TALKING, 5)]
    out = write_video(tmp_path / "odd.mp4", frames, Fraction(25))
    decoded = list(read_frames(out))
    assert decoded[0].shape == (412, 410, 3)
    assert np.abs(decoded[0][:411, :409].astype(int) - frames[0]).mean() < 3
    assert np.abs(decoded[0][:, 409].astype(int) - decoded[0][:, 408]).mean() < 3


def test_audio_the_container_cannot_copy_is_transcoded_to_aac(tmp_path: Path):
    # PCM from a WAV (the sample clip's own audio) fails in MP4, so it becomes AAC
    wav = tmp_path / "speech.wav"
    with av.open(str(sample_path(TALKING))) as source, av.open(str(wav), "w") as out:
        audio = source.streams.audio[0]
        stream = out.add_stream("pcm_s16le", rate=audio.codec_context.sample_rate,
                                layout=audio.codec_context.layout)
        for frame in islice(source.decode(audio), 60):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    out = write_video(tmp_path / "out.mp4", first_frames(TALKING, 10), Fraction(25),
                      audio_from=wav)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    assert probe_video(out).frame_count == 10
    with pytest.raises(MediaError, match="speech.wav: not a video"):
        probe_video(wav)


def test_failure_inside_with_leaves_no_file(tmp_path: Path):
    frame = first_frames(SILENT, 1)[0]
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, 25, 512, 512,
                                                  audio_from=sample_path(TALKING)) as writer:
        writer.write(frame)
        raise RuntimeError("swap failed")
    with pytest.raises(ValueError, match=r"out.mp4: frame 1 is uint8 \(10, 10, 3\)"), \
            VideoWriter(out, 25, 512, 512) as writer:
        writer.write(frame)
        writer.write(frame[:10, :10])
    with pytest.raises(ValueError, match="no frames"), VideoWriter(out, 25, 512, 512):
        pass
    assert list(tmp_path.iterdir()) == []  # no output, no temporary sibling
    with pytest.raises(ValueError, match=r"out.avi: unsupported video suffix \(use one of .mp4"):
        VideoWriter(tmp_path / "out.avi", 25, 512, 512)


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.mp4"
    data = sample_path(TALKING).read_bytes()
    contents = {"zero": b"", "text": b"not a video at all\n" * 50,
                "truncated": data[: len(data) * 3 // 10]}
    if kind in contents:
        path.write_bytes(contents[kind])
    return path


@pytest.mark.parametrize(("kind", "problem"), [
    ("missing", "file not found"), ("zero", "zero-byte file"),
    ("text", "not a readable video"), ("truncated", r"truncated \(166897 bytes"),
])
def test_bad_videos_name_the_file(tmp_path: Path, kind: str, problem: str):
    path = _bad_file(tmp_path, kind)
    for read in (probe_video, read_frames):
        with pytest.raises(MediaError, match=f"{kind}.mp4: {problem}"):
            read(path)


def test_corrupt_stream_says_which_frame(tmp_path: Path):
    # the index is intact (probing succeeds) but 20 kB in the middle of the data are zeros
    data = bytearray(sample_path(TALKING).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 20000] = bytes(20000)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    assert probe_video(path).frame_count == 169
    with pytest.raises(MediaError, match=r"damaged.mp4: corrupt or truncated: decoding failed "
                                         r"at frame \d+"):
        list(read_frames(path))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".JPEG"])
def test_save_image_is_tagged(tmp_path: Path, suffix: str):
    rgb = first_frames(TALKING, 1)[0]
    path = tmp_path / f"swap{suffix}"
    save_image(path, rgb, target='clip <"1">.mp4')
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).mean() < 2
    tags = read_metadata(path)
    assert tags["DigitalSourceType"] == SYNTHETIC_SOURCE_TYPE
    assert tags["heser:synthetic"] == "true" and tags["heser:target"] == 'clip <"1">.mp4'
    assert tags["Software"].startswith("heser ")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_image_rejects_other_suffixes(tmp_path: Path):
    with pytest.raises(ValueError, match=r"swap.gif: unsupported image suffix \(use one of "
                                         r"\.png, \.jpg, \.jpeg\)"):
        save_image(tmp_path / "swap.gif", np.zeros((8, 8, 3), np.uint8))
    assert not (tmp_path / "swap.gif").exists()
