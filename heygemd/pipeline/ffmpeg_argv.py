"""ffmpeg and ffprobe command lines: every argv heygemd runs is put together here.

An ffmpeg command is ``ffmpeg -nostdin -hide_banner -v error [-y] [OPTIONS -i INPUT]... OPTIONS OUTPUT``: the
global options (never read the terminal, no banner, errors only: stderr is quoted in error messages), then each
input after its own options, then the output's options and the output. ffprobe's is
``ffprobe -hide_banner -v error [-max_pixels N] OPTIONS INPUT``. Callers name the parts (:class:`Input`, the
output's options and URL); ``ffmpeg_command`` and ``ffprobe_command`` add the executable and the global options.
A job's file is an input read through its open descriptor (``file_input``: ``/proc/self/fd/N``, so the child is
started with ``pass_fds``) with its decoders held to a picture size (``-max_pixels``). ``ffmpeg_tools`` runs them.

Not ffmpeg-python: tried on ``read_frames``, ``VideoWriter`` and ``plain_transcode`` (their tests passed), it made
the code worse. What it makes clearer, each input with its own options, ``Input`` does as well. But its last
release is from 2019 and needs ``future`` (a Python 2 layer); it has no types (every graph is ``Any`` to mypy); it
sorts each file's options alphabetically and puts the global options after the output, so the argv no longer
reads as written; ffmpeg's spelling leaks through anyway (``**{"c:v": ...}``, ``**{"frames:v": n}``,
``noautorotate=None``, ``video[str(index)]``); its node graph is for filter graphs, and every chain here is one
linear ``-vf`` (as nodes, a labelled ``-filter_complex``); and it cannot build ffprobe's command lines (its
``probe()`` runs ffprobe itself, without ``pass_fds``, a timeout or a session of its own), so half of the
commands would still need this module. The writer's command with it, then as it is::

    frames = ffmpeg.input("pipe:0", f="rawvideo", pix_fmt="yuv420p", s=f"{width}x{height}", r=rate_arg(fps))
    sound = ffmpeg.input(audio.url, max_pixels=AUDIO_INPUT_MAX_PIXELS)
    graph = ffmpeg.output(frames["v:0"], sound["a:0"], media_url(temp), **encode_options)  # a dict now
    argv = graph.global_args("-nostdin", "-hide_banner", "-v", "error").overwrite_output().compile(cmd=ffmpeg_path)

    argv = ffmpeg_command(
        [raw_input("yuv420p", width, height, rate_arg(fps)), audio_input(audio)],
        ["-map", "0:v:0", "-map", "1:a:0", *encode_args, media_url(temp)],
        overwrite=True,
    )
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from heygemd.fsutil import InputFile
from heygemd.pipeline.ffmpeg_tools import find_tool

_GLOBAL_OPTIONS = ("-hide_banner", "-v", "error")
"""Both tools' global options: no banner, errors only."""

AUDIO_INPUT_MAX_PIXELS = 4096 * 4096
"""Largest picture ffmpeg decodes in an audio input: its cover art, never used, is skipped when larger."""


@dataclass(frozen=True)
class Input:
    """One ffmpeg input: its URL and the options that apply to it (they go before its ``-i``)."""

    url: str
    options: Sequence[str] = ()


def ffmpeg_command(
    inputs: Sequence[Input], output: Sequence[str], *, overwrite: bool = False, global_options: Sequence[str] = ()
) -> list[str]:
    """ffmpeg with the global options (``-y`` too when ``overwrite``, then ``global_options``), ``inputs`` in order
    (input 0 first), each after its own options, then ``output``: the output's options and its URL, last."""
    argv = [find_tool("ffmpeg"), "-nostdin", *_GLOBAL_OPTIONS, *(["-y"] if overwrite else []), *global_options]
    for item in inputs:
        argv += [*item.options, "-i", item.url]
    return [*argv, *output]


def ffprobe_command(url: str, options: Sequence[str], *, max_pixels: int | None = None) -> list[str]:
    """ffprobe with the global options and ``options`` on ``url``; its decoders refuse a picture of more than
    ``max_pixels`` pixels when given."""
    limit = [] if max_pixels is None else _max_pixels_args(max_pixels)
    return [find_tool("ffprobe"), *_GLOBAL_OPTIONS, *limit, *options, url]


def file_input(media: InputFile, max_pixels: int, options: Sequence[str] = ()) -> Input:
    """``media`` read through its descriptor (start the child with ``pass_fds=media.pass_fds``), after
    ``options``, its decoders held to ``max_pixels``."""
    return Input(media.url, [*options, *_max_pixels_args(max_pixels)])


def audio_input(media: InputFile) -> Input:
    """An audio file (or a video's sound track) as an input: a picture in it (cover art) larger than
    ``AUDIO_INPUT_MAX_PIXELS`` is not decoded."""
    return file_input(media, AUDIO_INPUT_MAX_PIXELS)


def raw_input(pix_fmt: str, width: int, height: int, rate: str) -> Input:
    """Raw frames of ``pix_fmt`` and ``width`` x ``height`` written to the child's stdin, ``rate`` (``rate_arg``)
    a second."""
    return Input("pipe:0", ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-r", rate])


def raw_output(pix_fmt: str) -> list[str]:
    """Output options and URL: raw frames of ``pix_fmt`` to the child's stdout."""
    return ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]


def _max_pixels_args(max_pixels: int) -> list[str]:
    """Input options (before its ``-i``) with which ffmpeg's and ffprobe's decoders refuse a picture of more than
    ``max_pixels`` pixels instead of allocating it ("Picture size WxH exceeds specified max pixel count")."""
    return ["-max_pixels", str(int(max_pixels))]


def media_url(path: Path) -> str:
    """``path`` as an ffmpeg input/output argument that cannot be mistaken for an option or a protocol.

    A name like ``-x.mp4`` or ``a:b.mp4`` would otherwise be read as an option or a URL scheme.
    """
    return "file:" + os.fspath(Path(path).absolute())


def rate_arg(fps: float) -> str:
    """An exact ffmpeg rate for ``fps`` (29.97002997 -> '30000/1001')."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"
