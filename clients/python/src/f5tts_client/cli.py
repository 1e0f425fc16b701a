"""`f5tts`: the endpoint from a shell.

    f5tts say "Hello there." --voice alice -o hello.mp3     # format from the extension
    f5tts say "A long story..." --stream -o story.wav        # the file grows as chunks arrive
    f5tts say "A long story..." --stream -o - | ffplay -nodisp -autoexit -   # play as chunks arrive
    f5tts voices list | add NAME AUDIO --text "..." | rm NAME
    f5tts health
    f5tts playground [--port P] [--host H [--allow-host NAME]] [--no-browser]   # a web page to hear and manage voices

Configuration comes from the environment: RUNPOD_API_KEY, and F5TTS_ENDPOINT_ID or F5TTS_ENDPOINT_URL (the
key is deliberately not a command-line option: it would land in shell history and `ps`). The synthesis options
of `say` are generated from the worker's contract (`f5tts_client._generated.params`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TextIO

from f5tts_client._audio_sink import STREAMABLE_FORMATS, AudioSink
from f5tts_client._config import ENV_API_KEY, ENV_ENDPOINT_ID, ENV_ENDPOINT_URL
from f5tts_client._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    EndpointNotFound,
    F5TTSError,
    JobNotFound,
    JobTimeout,
    WorkerError,
)
from f5tts_client._generated.params import OPTIONS, Option
from f5tts_client._not_given import NOT_GIVEN
from f5tts_client._sync._client import Client
from f5tts_client._types import JobState, RunPodJobStatus
from f5tts_client._version import __version__

# Exit codes a script can branch on (2 is also argparse's own for a bad command line).
EXIT_OK = 0
EXIT_FAILED = 1  # the job failed for a reason not listed below
EXIT_USAGE = 2  # bad arguments, or input the worker refused (invalid_input, unreadable audio, ...)
EXIT_CONFIG = 3  # no endpoint / no key / key refused / no such endpoint
EXIT_NOT_FOUND = 4  # no such voice, or the job expired
EXIT_CONFLICT = 5  # the voice already exists
EXIT_TIMEOUT = 6  # gave up waiting (the job may still finish)
EXIT_UNAVAILABLE = 7  # API unreachable, rate limited, server errors, model not loaded: try again later
EXIT_INTERRUPTED = 130

AudioFormat = Literal["wav", "flac", "mp3", "ogg"]
FORMAT_BY_EXTENSION: dict[str, AudioFormat] = {
    ".wav": "wav",
    ".flac": "flac",
    ".mp3": "mp3",
    ".ogg": "ogg",
    ".opus": "ogg",
}
# Contract fields `say` handles itself rather than as generated options.
# Handled by `say` itself: word timings only matter to the CLI as subtitles (`--subtitles out.srt`).
SAY_OWN_FIELDS = ("text", "format", "stream", "word_timestamps", "subtitle_format")
SUBTITLE_FORMATS = {".srt": "srt", ".vtt": "vtt"}

EXIT_BY_CODE = {
    "invalid_input": EXIT_USAGE,
    "audio_unreadable": EXIT_USAGE,
    "audio_too_large": EXIT_USAGE,
    "reference_too_long": EXIT_USAGE,
    "fetch_failed": EXIT_USAGE,
    "output_too_large": EXIT_USAGE,
    "voice_not_found": EXIT_NOT_FOUND,
    "voice_exists": EXIT_CONFLICT,
    "model_unavailable": EXIT_UNAVAILABLE,
    "storage_error": EXIT_UNAVAILABLE,
}
HINTS = {
    "voice_not_found": "`f5tts voices list` shows the stored voices",
    "voice_exists": "add --overwrite to replace it",
    "output_too_large": "use a compressed format (-o out.mp3) or shorter text",
    "model_unavailable": "the worker could not load its model; its log says why",
}


class UsageError(Exception):
    """A command line that cannot work (exit 2), found after argparse accepted it."""


# ---------------------------------------------------------------------------------------------- progress
class Progress:
    """One self-rewriting status line on a terminal (`queued 2.1 s`, `running 4.0 s`); silent otherwise, unless
    enabled (`--progress`): then, off a terminal (a CI log), one plain line per change."""

    LABELS: ClassVar[dict[str, str]] = {RunPodJobStatus.IN_QUEUE: "queued", RunPodJobStatus.IN_PROGRESS: "running"}

    def __init__(self, stream: TextIO, enabled: bool | None = None) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.enabled = self.terminal if enabled is None else enabled
        self._spinner = itertools.cycle("|/-\\")
        self._started = time.monotonic()
        self._shown = False
        self._last = ""

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._started
        if self.terminal:
            self.stream.write(f"\r\033[K{next(self._spinner)} {text} {elapsed:.1f} s")
            self._shown = True
        elif text != self._last:
            self.stream.write(f"{text} ({elapsed:.1f} s)\n")
        self._last = text
        self.stream.flush()

    def job_state(self, state: JobState) -> None:
        self.show(f"job {state.id} {self.LABELS.get(state.status, state.status.lower())}")

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


# ---------------------------------------------------------------------------------------------- commands
def cmd_say(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    output, fmt = _output_and_format(args.output, args.format)
    values = {o.name: getattr(args, o.name) for o in _say_options()}
    subtitles = _subtitles_path(args.subtitles)
    if subtitles is not None:
        values["subtitle_format"] = SUBTITLE_FORMATS[subtitles.suffix.lower()]
    if args.stream:
        return _say_streaming(client, args.text, values, output, fmt, args.timeout, progress, subtitles)
    job = client.submit(args.text, format=fmt, **values)
    try:
        result = job.wait(args.timeout, on_status=progress.job_state)
        progress.show(f"job {job.id} downloading")
        if output is None:
            sys.stdout.buffer.write(result.read())
            sys.stdout.buffer.flush()
        else:
            result.save(output)
        if subtitles is not None:
            result.save_subtitles(subtitles)
    except KeyboardInterrupt:
        progress.done()
        job.cancel()
        print(f"f5tts: interrupted; job {job.id} cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        progress.done()
    _report(output, f"{result.duration:.2f} s of {result.format} audio, voice {result.voice}, seed {result.seed}")
    return EXIT_OK


def _subtitles_path(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() not in SUBTITLE_FORMATS:
        raise UsageError(f"--subtitles {value!r}: use a .srt or .vtt file name")
    return path


def _report(output: Path | None, text: str) -> None:
    """The closing line: on stdout, unless stdout carries the audio (`-o -`)."""
    if output is None:
        print(f"f5tts: {text}", file=sys.stderr)
    else:
        print(f"{output}  {text}")


def _say_streaming(
    client: Client,
    text: str,
    values: dict[str, Any],
    output: Path | None,
    fmt: AudioFormat,
    timeout: float | None,
    progress: Progress,
    subtitles: Path | None,
) -> int:
    """Each chunk goes to the file (or stdout, for a player) the moment it arrives."""
    if fmt not in STREAMABLE_FORMATS:
        raise UsageError(f"{fmt} cannot be streamed into one file; use -o with .{', .'.join(STREAMABLE_FORMATS)}")
    sink = AudioSink(sys.stdout.buffer if output is None else output, fmt)
    received = 0.0
    try:
        with client.synthesize_stream(text, format=fmt, timeout=timeout, **values) as stream:
            progress.show("waiting for the first chunk")
            for chunk in stream:
                sink.write(chunk.audio)
                received += chunk.duration
                progress.show(f"job {stream.job_id} chunk {chunk.index + 1}, {received:.1f} s of audio")
    except KeyboardInterrupt:
        print("f5tts: interrupted; job cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sink.close()
        progress.done()
    summary = stream.summary
    assert summary is not None  # an exhausted stream has its summary (or raised UnexpectedResponse)
    if subtitles is not None and summary.subtitles is not None:
        subtitles.write_text(summary.subtitles, encoding="utf-8")
    _report(
        output,
        f"{summary.duration:.2f} s of {fmt} audio in {summary.chunks} chunks, voice {summary.voice}, seed {summary.seed}",
    )
    return EXIT_OK


def cmd_voices_list(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    voices = client.voices.list(timeout=args.timeout)
    if args.json:
        print(json.dumps([v.model_dump(mode="json") for v in voices], indent=2))
        return EXIT_OK
    width = max([len(v.name) for v in voices] + [4])
    print(f"{'NAME':<{width}}  DURATION  BUILTIN  TEXT")
    for v in voices:
        text = v.text if len(v.text) <= 60 else v.text[:59] + "…"
        print(f"{v.name:<{width}}  {v.duration:>7.2f}s  {'yes' if v.builtin else 'no':<7}  {text}")
    return EXIT_OK


def cmd_voices_add(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    info = client.voices.upload(args.name, args.audio, args.text, overwrite=args.overwrite, timeout=args.timeout)
    clipped = f" (clipped from {info.original_duration:.2f} s)" if info.clipped else ""
    print(f"stored voice {info.name}: {info.duration:.2f} s{clipped}")
    return EXIT_OK


def cmd_voices_rm(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    client.voices.delete(args.name, timeout=args.timeout)
    print(f"deleted voice {args.name}")
    return EXIT_OK


def cmd_health(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    health = client.health(timeout=args.timeout)
    if args.json:
        print(health.model_dump_json(indent=2))
    else:
        for key, value in health.model_dump(mode="json").items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_playground(client: Client, args: argparse.Namespace, progress: Progress) -> int:
    from f5tts_client import playground

    try:
        playground.run(client, args.host, args.port, open_browser=not args.no_browser, allow_hosts=args.allow_host)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        print("f5tts: playground stopped", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parsing
def _say_options() -> list[Option]:
    return [o for o in OPTIONS["synthesize"] if o.name not in SAY_OWN_FIELDS]


def _add_contract_option(parser: argparse.ArgumentParser, option: Option) -> None:
    flag = "--" + option.name.replace("_", "-")
    # An option not on the command line is not sent: the worker applies its own default (the help names it).
    kwargs: dict[str, Any] = {"dest": option.name, "default": NOT_GIVEN, "help": option.help.replace("%", "%%")}
    if option.kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif option.kind == "choice":
        kwargs["choices"] = option.choices
    elif option.kind in ("int", "float"):
        kwargs["type"] = int if option.kind == "int" else float
        kwargs["metavar"] = "N"
    elif option.kind == "audio":
        kwargs["metavar"] = "PATH_OR_URL"
    parser.add_argument(flag, **kwargs)


def _output_and_format(output: str | None, fmt: AudioFormat | None) -> tuple[Path | None, AudioFormat]:
    """The output path (None: stdout, `-o -`) and the audio format: from --format, else from the extension, else
    wav."""
    if output == "-":
        return None, fmt or "wav"
    if output is None:
        fmt = fmt or "wav"
        return Path(f"speech.{fmt}"), fmt
    path = Path(output)
    from_extension = FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if fmt is None:
        if from_extension is None:
            raise UsageError(
                f"cannot tell the audio format from {output!r}: use an extension "
                f"({', '.join(FORMAT_BY_EXTENSION)}) or --format"
            )
        return path, from_extension
    if from_extension is not None and from_extension != fmt:
        raise UsageError(f"{output!r} looks like {from_extension}, but --format is {fmt}")
    return path, fmt


def _add_common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--timeout", type=float, default=default, metavar="S", help="give up after S seconds (default 600)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=False if default is None else default, help="no progress line"
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        default=False if default is None else default,
        help="show progress on stderr even when it is not a terminal (one line per change)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="f5tts",
        description="Speak text in a cloned voice on the F5-TTS endpoint, and manage its stored voices.",
        epilog=f"Configuration: {ENV_API_KEY}, and {ENV_ENDPOINT_ID} or {ENV_ENDPOINT_URL} (e.g. the devstack). "
        "Exit codes: 0 ok, 1 job failed, 2 bad usage or input, 3 configuration/auth, 4 not found, 5 already exists, "
        "6 timed out, 7 service unavailable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--endpoint-url", help=f"RunPod-compatible base URL (default: ${ENV_ENDPOINT_URL})")
    parser.add_argument("--endpoint-id", help=f"RunPod endpoint id (default: ${ENV_ENDPOINT_ID})")
    _add_common_options(parser, default=None)
    # The same options are accepted after the command too (`f5tts say ... --timeout 30`).
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = commands.add_parser(
        "say", parents=[common], help="synthesize speech into a file", description="Synthesize speech into a file."
    )
    say.add_argument("text", help="the text to speak")
    say.add_argument(
        "-o", "--output", help="output file; its extension picks the format (default: speech.wav); '-' for stdout"
    )
    say.add_argument(
        "--format", choices=tuple(dict.fromkeys(FORMAT_BY_EXTENSION.values())), help="audio format (default: from -o)"
    )
    say.add_argument(
        "--stream",
        action="store_true",
        help="write chunks to the file (or stdout) as they are generated (wav, mp3, ogg)",
    )
    say.add_argument(
        "--subtitles", metavar="PATH", help="also write subtitles of the speech: PATH ends in .srt or .vtt"
    )
    for option in _say_options():
        _add_contract_option(say, option)
    say.set_defaults(handler=cmd_say)

    voices = commands.add_parser("voices", parents=[common], help="list, add or remove stored voices").add_subparsers(
        dest="voices_command", required=True, metavar="ACTION"
    )
    listing = voices.add_parser("list", parents=[common], help="list the stored voices")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_voices_list)
    add = voices.add_parser("add", parents=[common], help="store a reference clip as a voice")
    add.add_argument("name", help="voice name: lowercase letters, digits, '-' and '_'")
    add.add_argument("audio", help="reference clip: a file path or an http(s) URL (the worker fetches it)")
    add.add_argument("--text", help="the clip's transcript")
    add.add_argument(
        "--overwrite", action="store_true", default=NOT_GIVEN, help="replace an existing voice of that name"
    )
    add.set_defaults(handler=cmd_voices_add)
    remove = voices.add_parser("rm", parents=[common], help="delete a stored voice")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_voices_rm)

    health = commands.add_parser("health", parents=[common], help="ask a worker for its health")
    health.add_argument("--json", action="store_true", help="print JSON")
    health.set_defaults(handler=cmd_health)

    play = commands.add_parser(
        "playground",
        parents=[common],
        help="a local web page to hear, compare and manage voices (the key stays in this process)",
        description="Serve a web page on this machine that speaks through the configured endpoint. Ctrl-C stops it.",
    )
    play.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free port)")
    play.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; anything else lets others use your key, and says so)",
    )
    play.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="with --host beyond loopback: a name the page may be opened by (IP addresses always work); repeatable",
    )
    play.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    play.set_defaults(handler=cmd_playground)
    return parser


# ---------------------------------------------------------------------------------------------- errors
def _explain(exc: Exception) -> tuple[int, str, str | None]:
    """Exit code, message and hint for a failure."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE, str(exc), None
    if isinstance(exc, WorkerError):
        return EXIT_BY_CODE.get(exc.code, EXIT_FAILED), str(exc), HINTS.get(exc.code)
    if isinstance(exc, ConfigurationError):
        return EXIT_CONFIG, str(exc), f"export {ENV_API_KEY}=... and {ENV_ENDPOINT_ID}=... (or {ENV_ENDPOINT_URL}=...)"
    if isinstance(exc, (AuthenticationError, EndpointNotFound)):
        return EXIT_CONFIG, str(exc), None
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND, str(exc), None
    if isinstance(exc, JobTimeout):
        hint = None if exc.on_server else "raise --timeout; the job may still finish on the endpoint"
        return EXIT_TIMEOUT, str(exc), hint
    if isinstance(exc, (APIConnectionError, APIStatusError)):
        return EXIT_UNAVAILABLE, str(exc), "check the endpoint URL and your network, or try again later"
    return EXIT_FAILED, str(exc), None


def main(argv: list[str] | None = None, *, client_factory: Callable[..., Client] = Client) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = Progress(sys.stderr, enabled=True if args.progress else False if args.quiet else None)
    try:
        with client_factory(
            endpoint_url=args.endpoint_url, endpoint_id=args.endpoint_id, poll_interval_max=1.0
        ) as client:
            handler: Callable[[Client, argparse.Namespace, Progress], int] = args.handler
            return handler(client, args, progress)
    except (F5TTSError, UsageError) as exc:
        progress.done()
        code, message, hint = _explain(exc)
        print(f"f5tts: error: {message}", file=sys.stderr)
        if hint:
            print(f"f5tts: hint: {hint}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        progress.done()
        print("f5tts: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
