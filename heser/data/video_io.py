"""Every video heser reads or writes: the crop stage's sampled frames (:class:`VideoReader`),
`heser swap`'s target and source videos, and its output: H.264 MP4 with the target's audio,
every output file tagged as synthetic media.

PyAV (FFmpeg bundled in its wheel) does the work; its exceptions never leave this module: a
file that cannot be used raises :class:`MediaError` naming the file and the problem.

Decisions, each tested in tests/data/test_video_io.py:

* Colour. Frames are converted to RGB with the BT.601 matrix whatever the stream is tagged, as
  OpenCV's FFmpeg backend (the crop stage's reader before this one) does, so the crops did not
  change when the readers were merged: every frame of the 33 sample videos decodes to the same
  bytes as with OpenCV. Honouring a BT.709 tag would shift 6 of them by up to 19 levels (mean
  1-2). The writer's frames go through the same matrix (and are untagged), so heser reads its
  own videos back as written, up to yuv420p's halved chroma.

* Odd sizes. H.264 in yuv420p (the pixel format every player decodes) stores colour at half
  resolution and can only crop in steps of 2 pixels, so an odd width or height cannot be
  encoded as such. :class:`VideoWriter` repeats the last column and/or row (edge padding, no
  scaling), so the picture is untouched and the file is at most one pixel wider and taller
  (:attr:`VideoWriter.encoded_size`).
* Audio. The audio stream of ``audio_from`` is copied packet for packet (bit-exact); only a
  codec the container cannot hold (tried on the first packet) is transcoded to AAC, mono or
  stereo. Audio stops with the video: source packets (or decoded frames, when transcoding)
  starting at or after the end of the last frame are dropped, so the audio overruns the video
  by less than one of them (about 23 ms for AAC). Audio keeps its timing relative to the
  source's first video frame, which becomes time 0 of the output.
* Damaged input. :func:`probe_video` and :func:`read_frames` reject a container whose index
  points past the end of the file (a truncated download) when they open it. Then
  :func:`read_frames` raises at the first frame FFmpeg fails to demux or decode, saying which;
  a stream that ends early without an error just ends the iteration (edit lists legitimately
  make an MP4 decode fewer frames than it declares), so the caller counts the frames it got.
  :class:`VideoReader` (the crop stage) instead keeps what decodes and notes where the stream
  stopped short of the frames the container declares (``info.truncated``).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from xml.sax.saxutils import quoteattr

import av
import numpy as np
from PIL import ExifTags, Image

import heser
from heser.data.media import MediaError, check_file, check_size
from heser.io import IPTC_SOURCE_TYPE, atomic_path, png_bytes

SYNTHETIC_SOURCE_TYPE = IPTC_SOURCE_TYPE + "algorithmicMedia"
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_QUALITY = 95
# A float frame rate becomes the nearest fraction with this denominator at most: 29.97 ->
# 2997/100, 1350/61 stays exact. Pass a Fraction (VideoMeta.rate) to keep a rate as it is.
MAX_RATE_DENOMINATOR = 1001

XMP_NAMESPACES = {
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "heser": "https://heser.invalid/ns/1.0/",
}


@dataclass(frozen=True)
class VideoMeta:
    """What `heser swap` needs to write a video like the target (see :func:`probe_video`)."""

    fps: float
    rate: Fraction  # the exact average frame rate, what VideoWriter should be given
    frame_count: int
    width: int
    height: int
    has_audio: bool
    duration_s: float


def _software() -> str:
    return f"heser {heser.__version__}"


@contextlib.contextmanager
def _av_errors(path: Path, problem: str) -> Iterator[None]:
    """Re-raise FFmpeg's errors as MediaError naming the file, the problem and FFmpeg's reason."""
    try:
        yield
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: {problem}: {exc.strerror or exc}") from exc


def _open_video(path: Path, check_index: bool = True) -> av.container.InputContainer:
    check_file(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video "
                         "(corrupt, truncated or unsupported container)") from exc
    try:
        if not container.streams.video:
            raise MediaError(f"{path}: not a video (the container has no video stream)")
        if check_index:
            _check_complete(path, container)
    except MediaError:
        container.close()
        raise
    container.streams.video[0].thread_type = "AUTO"  # frame threads: the same frames, faster
    return container


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 HxWx3 through the BT.601 matrix (see the module docstring)."""
    return frame.to_ndarray(format="rgb24", src_colorspace="ITU601", dst_colorspace="ITU601")


def _check_complete(path: Path, container: av.container.InputContainer) -> None:
    """A truncated MP4 whose index sits in front still opens; its index points past the end."""
    size = path.stat().st_size
    for stream in container.streams:
        entries = stream.index_entries
        end = max((entry.pos + entry.size for entry in entries), default=0)
        if end > size:
            raise MediaError(f"{path}: truncated ({size} bytes; the {stream.type} index "
                             f"reaches byte {end})")


def _count_packets(path: Path, container: av.container.InputContainer) -> int:
    with _av_errors(path, "cannot count the frames"):
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def probe_video(path: Path) -> VideoMeta:
    """Frame rate, size, frame count and audio of a video, from its headers.

    The frame count is the container's; only a container that does not declare one (0) has
    its video packets counted.
    """
    path = Path(path)
    with _open_video(path) as container:
        return _meta(path, container)


def _meta(path: Path, container: av.container.InputContainer) -> VideoMeta:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise MediaError(f"{path}: the video stream has no frame rate")
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise MediaError(f"{path}: the video stream has no frame size")
    frame_count = stream.frames or _count_packets(path, container)
    if stream.duration is not None:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = frame_count / float(rate)
    return VideoMeta(fps=float(rate), rate=Fraction(rate), frame_count=frame_count,
                     width=width, height=height, has_audio=bool(container.streams.audio),
                     duration_s=duration)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of the video in display order, as RGB uint8 HxWx3.

    The file is opened (and checked) at the call; a demux or decode error later raises
    MediaError saying at which frame, so damage is reported, not passed off as a shorter video.
    A stream that ends early without an error just ends (see the module docstring).
    """
    path = Path(path)
    container = _open_video(path)
    return _decode(path, container)


def _decode(path: Path, container: av.container.InputContainer) -> Iterator[np.ndarray]:
    index = 0
    with container:
        try:
            for frame in container.decode(container.streams.video[0]):
                yield _rgb(frame)
                index += 1
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt or truncated: decoding failed at frame {index} "
                             f"({exc.strerror or exc})") from exc


@dataclass
class VideoInfo:
    """What a :class:`VideoReader` knows of its video; the last three are filled as it reads."""

    fps: float
    frame_count: int  # as the container declares it
    width: int
    height: int
    frames_read: int = 0
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


class VideoReader:
    """Sampled frames of one video, keeping whatever decodes (the crop stage's policy).

    Opening checks the file (missing, zero bytes, unreadable container, no video stream,
    smaller than ``min_side``); reading notes a stream that ends before the frame count the
    container declares (a truncated file) in ``info`` instead of raising.
    """

    def __init__(self, path: Path, min_side: int = 1) -> None:
        self.path = Path(path)
        with _open_video(self.path, check_index=False) as container:
            meta = _meta(self.path, container)
        self.info = VideoInfo(meta.fps, meta.frame_count, meta.width, meta.height)
        check_size(self.path, meta.width, meta.height, min_side)

    def frames(self, stride: int = 1, max_frames: int | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, RGB frame) for every ``stride``-th frame, at most ``max_frames``
        (None: all)."""
        info, yielded = self.info, 0
        limit = max_frames or sys.maxsize
        with _open_video(self.path, check_index=False) as container:
            frames = container.decode(container.streams.video[0])
            index = -1
            while yielded < limit:
                try:
                    frame = next(frames, None)
                except av.FFmpegError:  # damaged data: keep what came before, noted below
                    frame = None
                if frame is None:
                    break
                index += 1
                info.frames_read = index + 1
                if index % stride == 0:
                    yielded += 1
                    yield index, _rgb(frame)
        if info.frames_read == 0:
            raise MediaError(f"{self.path}: video has no decodable frames")
        wanted = min(info.frame_count, stride * (limit - 1) + 1)
        if yielded < limit and info.frames_read < wanted:
            info.truncated = True
            info.notes.append(f"truncated: stream ended at frame {info.frames_read} of "
                              f"{info.frame_count} the container declares")


class _Audio:
    """The audio of ``path`` added to ``out``, written in step with the video and cut at its end.

    Copied packet for packet when the output container can hold the codec, else decoded and
    re-encoded as AAC. Times are shifted by the source's video start (see _video_start).
    """

    def __init__(self, path: Path, out: av.container.OutputContainer) -> None:
        self.path = path
        with _av_errors(path, "cannot open the audio source"):
            self.container = av.open(str(path))
        if not self.container.streams.audio:
            self.container.close()
            raise MediaError(f"{path}: has no audio stream to copy")
        source = self.container.streams.audio[0]
        self.offset = _video_start(self.container)
        self.copy = _copy_works(path, out.format.name)
        if self.copy:
            self.stream = out.add_stream_from_template(source)
            self._items = (p for p in self.container.demux(source) if p.pts is not None)
        else:
            layout = "mono" if source.codec_context.channels == 1 else "stereo"
            self.stream = out.add_stream("aac", rate=source.codec_context.sample_rate,
                                         layout=layout)
            self._items = self.container.decode(source)
        self._next: av.Packet | av.AudioFrame | None = None
        self.out = out

    def _peek(self) -> av.Packet | av.AudioFrame | None:
        if self._next is None:
            with _av_errors(self.path, "cannot read the audio"):
                self._next = next(self._items, None)
        return self._next

    def write_until(self, end_s: Fraction) -> None:
        """Write the audio starting before ``end_s`` seconds of output time."""
        while (item := self._peek()) is not None:
            shift = round(self.offset / item.time_base)
            if (item.pts - shift) * item.time_base >= end_s:
                return
            self._next = None
            item.pts -= shift
            if self.copy:
                item.dts = None if item.dts is None else item.dts - shift
                item.stream = self.stream
                self.out.mux(item)
            else:
                self.out.mux(self.stream.encode(item))

    def finish(self, end_s: Fraction) -> None:
        self.write_until(end_s)
        if not self.copy:
            self.out.mux(self.stream.encode(None))
        self.container.close()


def _copy_works(path: Path, fmt: str) -> bool:
    """Whether the audio of ``path`` can be copied into a ``fmt`` file, tried on its first packet
    in memory: some codecs the muxer accepts fail only when it writes the index (PCM with an
    unnamed channel layout in MP4)."""
    try:
        with av.open(str(path)) as source, av.open(io.BytesIO(), "w", format=fmt) as trial:
            audio = source.streams.audio[0]
            stream = trial.add_stream_from_template(audio)
            packet = next((p for p in source.demux(audio) if p.dts is not None), None)
            if packet is not None:
                packet.stream = stream
                trial.mux(packet)
    except av.FFmpegError:
        return False
    return True


def _video_start(container: av.container.InputContainer) -> Fraction:
    """When the first video frame of the source shows; time 0 of the output is that instant."""
    if not container.streams.video:
        return Fraction(0)
    stream = container.streams.video[0]
    return Fraction(stream.start_time or 0) * stream.time_base


class VideoWriter:
    """Write RGB frames as an H.264 (libx264, yuv420p) MP4, tagged as synthetic media.

    Use as a context manager. The file is written under a temporary sibling name and renamed
    onto ``out_path`` when the ``with`` block ends without an exception; otherwise nothing is
    left at ``out_path``. Frame ``i`` is shown at ``i / fps`` exactly (``fps`` as a Fraction;
    a float is made rational, see MAX_RATE_DENOMINATOR). ``audio_from`` (usually the target
    video) gives the audio track; ``metadata`` adds container tags next to the synthetic ones.
    """

    def __init__(self, out_path: Path, fps: Fraction | float, width: int, height: int,
                 crf: int = 18, audio_from: Path | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        self.out_path = Path(out_path)
        fmt = VIDEO_FORMATS.get(self.out_path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{self.out_path}: unsupported video suffix (use one of "
                             f"{', '.join(VIDEO_FORMATS)})")
        if width < 1 or height < 1:
            raise ValueError(f"{self.out_path}: bad frame size {width}x{height}")
        self.format = fmt
        self.rate = fps if isinstance(fps, Fraction) else (
            Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR))
        if self.rate <= 0:
            raise ValueError(f"{self.out_path}: bad frame rate {fps}")
        self.width, self.height = width, height
        self.encoded_size = (width + width % 2, height + height % 2)
        self.crf = crf
        self.audio_from = None if audio_from is None else Path(audio_from)
        self.metadata = dict(metadata or {})
        self.frames = 0
        self._stack = contextlib.ExitStack()

    def tags(self) -> dict[str, str]:
        """The container metadata: the caller's, then the synthetic-media tags (which win)."""
        return {**self.metadata,
                "comment": f"Synthetic media: made by {_software()} (head swap); "
                           f"IPTC digital source type {SYNTHETIC_SOURCE_TYPE}",
                "DigitalSourceType": SYNTHETIC_SOURCE_TYPE,
                "synthetic": "true",
                "software": _software()}

    def __enter__(self) -> VideoWriter:
        with self._stack as stack:
            tmp = stack.enter_context(atomic_path(self.out_path))
            with _av_errors(self.out_path, "cannot open for writing"):
                # use_metadata_tags: without it the MP4 muxer drops keys it has no atom for
                self.out = av.open(str(tmp), "w", format=self.format,
                                   options={"movflags": "+faststart+use_metadata_tags"})
            stack.callback(self._close)
            self.out.metadata.update(self.tags())
            self.video = self.out.add_stream("libx264", rate=self.rate,
                                             options={"crf": str(self.crf)})
            self.video.width, self.video.height = self.encoded_size
            self.video.pix_fmt = "yuv420p"
            self.audio = None if self.audio_from is None else _Audio(self.audio_from, self.out)
            if self.audio is not None:
                stack.callback(self.audio.container.close)
            self._stack = stack.pop_all()
        return self

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 HxWx3 frame (H and W as given to the writer)."""
        if rgb.dtype != np.uint8 or rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.out_path}: frame {self.frames} is {rgb.dtype} "
                             f"{rgb.shape}, expected uint8 ({self.height}, {self.width}, 3)")
        pad = ((0, self.encoded_size[1] - self.height), (0, self.encoded_size[0] - self.width),
               (0, 0))
        frame = av.VideoFrame.from_ndarray(np.pad(rgb, pad, mode="edge"), format="rgb24")
        frame.pts, frame.time_base = self.frames, 1 / self.rate
        with _av_errors(self.out_path, f"cannot encode frame {self.frames}"):
            self.out.mux(self.video.encode(frame))
            self.frames += 1
            if self.audio is not None:
                self.audio.write_until(self.frames / self.rate)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # close, and remove the temporary file
            return self._stack.__exit__(exc_type, exc, tb)
        with self._stack:
            self._finish()
        return False

    def _close(self) -> None:
        with _av_errors(self.out_path, "cannot write the end of the file"):
            self.out.close()

    def _finish(self) -> None:
        if self.frames == 0:
            raise ValueError(f"{self.out_path}: no frames were written")
        with _av_errors(self.out_path, "cannot finish the file"):
            self.out.mux(self.video.encode(None))
            if self.audio is not None:
                self.audio.finish(self.frames / self.rate)


def save_image(path: Path, rgb: np.ndarray, **text: str) -> None:
    """Write a PNG or JPEG (quality 95), tagged as synthetic media, atomically.

    PNG: text chunks (:func:`heser.io.png_bytes`). JPEG: an XMP packet with the IPTC digital
    source type and ``heser:<key>`` for each ``text`` item, and EXIF Software and
    ImageDescription. :func:`read_metadata` reads either back under the same keys.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported image suffix (use one of "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    data = png_bytes(rgb, **text) if suffix == ".png" else _jpeg_bytes(rgb, **text)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _jpeg_bytes(rgb: np.ndarray, **text: str) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Software] = _software()
    exif[ExifTags.Base.ImageDescription] = "Synthetic media (IPTC digital source type " \
                                           "algorithmicMedia)"
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY, exif=exif,
                              xmp=_xmp_packet(text))
    return buf.getvalue()


def _xmp_packet(text: Mapping[str, str]) -> bytes:
    fields = {"Iptc4xmpExt:DigitalSourceType": SYNTHETIC_SOURCE_TYPE, "heser:synthetic": "true",
              **{f"heser:{key}": value for key, value in text.items()}}
    namespaces = " ".join(f"xmlns:{prefix}={quoteattr(uri)}"
                          for prefix, uri in XMP_NAMESPACES.items())
    attributes = "\n   ".join(f"{name}={quoteattr(value)}" for name, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" {namespaces}\n   {attributes}/>\n'
        " </rdf:RDF>\n</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def read_metadata(path: Path) -> dict[str, str]:
    """The provenance tags of a file: a video's container metadata, a PNG's text chunks, or a
    JPEG's EXIF (by tag name) and XMP properties (``heser:<key>`` for heser's namespace, the bare
    property name for others, e.g. ``DigitalSourceType``)."""
    path = Path(path)
    check_file(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _image_metadata(path)
    with _av_errors(path, "cannot read the metadata"), av.open(str(path)) as container:
        return dict(container.metadata)


def _image_metadata(path: Path) -> dict[str, str]:
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                return dict(image.text)
            tags = {ExifTags.TAGS.get(tag, str(tag)): value
                    for tag, value in image.getexif().items() if isinstance(value, str)}
            return {**tags, **_xmp_properties(image.info.get("xmp", b""))}
    except (OSError, ET.ParseError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc})") from exc


def _xmp_properties(xmp: bytes) -> dict[str, str]:
    """Simple properties of an XMP packet, written as attributes or as elements with text."""
    if not xmp:
        return {}
    root = ET.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", xmp))
    descriptions = root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    properties: dict[str, str] = {}
    for description in descriptions:
        items = [*description.attrib.items(),
                 *((child.tag, child.text) for child in description if child.text)]
        for name, value in items:
            key = _xmp_key(name)
            if key is not None:
                properties[key] = value.strip()
    return properties


def _xmp_key(name: str) -> str | None:
    uri, _, local = name.rpartition("}")
    uri = uri.lstrip("{")
    if uri == XMP_NAMESPACES["heser"]:
        return f"heser:{local}"
    return None if uri.endswith("rdf-syntax-ns#") else local
