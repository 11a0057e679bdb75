"""Command line: parse arguments -> Settings -> logging -> the command. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from heygemd import __version__
from heygemd.accounts import ROLES
from heygemd.engine_names import CHOICES
from heygemd.errors import HeygemdError
from heygemd.settings import FaceChoice, LoopMode, Settings, find_config, load_settings

if TYPE_CHECKING:
    from heygemd.control import Control
    from heygemd.daemon.lifecycle import Hooks
    from heygemd.notify.notices import Notices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heygemd", description="Lip-sync video daemon: one audio, many presenters.")
    in_use = find_config()
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration (default: $HEYGEMD_CONFIG, else /etc/heygemd/heygemd.toml, else the repository's "
        f"config/heygemd.toml; now: {in_use if in_use is not None else 'none, the built-in defaults'})",
    )
    parser.add_argument("--version", action="version", version=f"heygemd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def engine_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--engine", choices=CHOICES, help="engine (default from config)")
        p.add_argument("--checkpoint", type=Path, help="Wav2Lip checkpoint (default: models/wav2lip_gan.pth)")
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default from config)")

    single = commands.add_parser("single", help="lip-sync one video (or still image) to one audio")
    single.add_argument("--audio", type=Path, required=True)
    single.add_argument("--video", type=Path, required=True)
    single.add_argument("--out", type=Path, required=True, help="output .mp4")
    engine_options(single)

    batch = commands.add_parser(
        "batch", help="lip-sync every video in a folder (and presenters of the library) to one audio"
    )
    batch.add_argument("--audio", type=Path, required=True)
    batch.add_argument("--videos", type=Path, help="folder of videos and still images")
    batch.add_argument(
        "--presenters", help="presenters of the library, comma-separated (anna,bob), or all; with or without --videos"
    )
    batch.add_argument("--out", type=Path, required=True, help="output folder")
    engine_options(batch)

    commands.add_parser("run", help="run the daemon: watch the inbox and process jobs until stopped")
    commands.add_parser("once", help="process every ready job in the inbox, then exit")
    worker = commands.add_parser(
        "worker", help="farm: render the jobs the intake publishes (one per GPU; needs [queue] broker)"
    )
    worker.add_argument("--device", help="cpu, cuda or cuda:N (default from config)")
    worker.add_argument("--name", help="Celery node name (default: <device>@<host>)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve this worker's Prometheus metrics (its engine, its machine's GPUs, the process) on port N",
    )
    status = commands.add_parser("status", help="show jobs from the outbox's status files")
    status.add_argument("job", nargs="?", help="one job's id for its per-video detail")
    cancel = commands.add_parser("cancel", help="cancel a job: waiting, it never starts; rendering, it stops soon")
    cancel.add_argument("job", help="the job's id (as `heygemd status` shows it, or its folder in the inbox)")
    retry = commands.add_parser(
        "retry",
        help="submit a finished job's failed or cancelled videos again, as a new job (<job>-retry); a job that "
        "failed as a whole: every file of its archived inputs (fix them there first, the error's hint says where)",
    )
    retry.add_argument("job", help="the job's id (as `heygemd status` shows it)")
    retry.add_argument(
        "--engine",
        dest="retry_engine",
        choices=CHOICES,
        help="render the new job with this engine (otherwise the one its job.toml names)",
    )
    delete = commands.add_parser("delete", help="delete a finished job: its outbox folder and its archived inputs")
    delete.add_argument("job", help="the job's id (as `heygemd status` shows it)")
    priority = commands.add_parser("priority", help="change the priority of a job that has not started")
    priority.add_argument("job", help="the job's id (as `heygemd status` shows it, or its folder in the inbox)")
    priority.add_argument(
        "priority", type=_priority, help="high, normal, low, or a number from 0 to 9 (higher runs first)"
    )
    commands.add_parser("pause", help="stop taking jobs (a job in progress finishes); kept across restarts")
    commands.add_parser("resume", help="take jobs again after `heygemd pause`")
    users = commands.add_parser("users", help="the web server's accounts and their API keys")
    users_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = users_commands.add_parser("add", help="a new account (its password typed twice, or one line on stdin)")
    add.add_argument("name", help="1-32 lower-case letters, digits, '.', '_', '-'")
    add.add_argument("--role", choices=ROLES, required=True, help="viewer, editor (submits, cancels) or admin")
    add.add_argument("--no-password", action="store_true", help="an account for scripts: API keys only")
    users_commands.add_parser("list", help="the accounts, their roles and API keys (never a secret)")
    remove = users_commands.add_parser("remove", help="remove an account: its keys and sessions stop working")
    remove.add_argument("name")
    key = users_commands.add_parser("key", help="a new API key for a script (printed once), or --revoke one")
    key.add_argument("name", help="the account")
    key.add_argument("key_name", help="the key's name, e.g. the script's")
    key.add_argument("--revoke", action="store_true", help="revoke the key of that name (or id)")
    role = users_commands.add_parser("role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    password = users_commands.add_parser("password", help="change an account's password")
    password.add_argument("name")
    password.add_argument("--none", action="store_true", help="remove it: API keys only")
    presenters = commands.add_parser(
        "presenters", help="the presenter library: list it (a table), add a presenter, remove one"
    )
    library = presenters.add_subparsers(dest="action", metavar="ACTION")
    add = library.add_parser("add", help="copy a video or photo into the library as a presenter")
    add.add_argument("file", type=Path, help="the presenter's video or photo")
    add.add_argument("--name", default="", help="what jobs call it (default: the file's name without its suffix)")
    add.add_argument("--display-name", help="the name people see")
    add.add_argument("--face", choices=get_args(FaceChoice), help="which face to follow when several are in view")
    add.add_argument("--loop-mode", choices=get_args(LoopMode), help="when the audio is longer than the video")
    add.add_argument("--presenter-engine", choices=CHOICES, help="the engine that renders it when a job names none")
    add.add_argument("--notes", help="free text")
    remove = library.add_parser("remove", help="remove a presenter (refused while a job not finished names it)")
    remove.add_argument("name")
    commands.add_parser("check", help="check ffmpeg, models, device, folders and journald")
    score = commands.add_parser(
        "score", help="check any video's lip sync and look (the check the daemon runs on every output)"
    )
    score.add_argument("video", type=Path, help="the video to check (with its own sound unless --audio)")
    score.add_argument("--audio", type=Path, help="the speech it should say (default: the video's own sound)")
    score.add_argument("--source", type=Path, help="the presenter video it was made from (to measure the seam)")
    score.add_argument("--json", action="store_true", help="print status.json's `quality` object instead of a table")
    commands.add_parser("web", help="serve the web dashboard and HTTP API (web.host:web.port)")
    demo = commands.add_parser("demo", help="put a generated demo job (speech + 2 presenters) into the inbox")
    demo.add_argument("--name", default="demo-lesson", help="job folder name")
    return parser


def _priority(text: str) -> int:
    from heygemd.daemon.priority import priority_from

    try:
        return priority_from(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`heygemd status | head -1`): no traceback; Python would print one again when it
        # flushes stdout at exit, so stdout is pointed at /dev/null first
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _with_overrides(load_settings(args.config), args)
    except HeygemdError as exc:
        print(f"heygemd: {exc.message}\n  what to do: {exc.hint}", file=sys.stderr)
        return 2

    from heygemd.logs import configure_logging

    configure_logging(settings.logging)
    try:
        return _dispatch(args, settings)
    except HeygemdError as exc:
        print(f"heygemd: [{exc.code}] {exc.message}\n  what to do: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _with_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    updates = {
        key: value
        for key, value in (
            ("name", getattr(args, "engine", None)),
            ("checkpoint", getattr(args, "checkpoint", None)),
            ("device", getattr(args, "device", None)),
        )
        if value is not None
    }
    if "checkpoint" in updates:
        updates["checkpoint"] = updates["checkpoint"].resolve()
        updates.setdefault("name", "wav2lip")
    if not updates:
        return settings
    return settings.model_copy(update={"engine": settings.engine.model_copy(update=updates)})


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("single", "batch"):
        from heygemd.batch import VideoOutcome, library_videos, render_many, summary, videos_in
        from heygemd.lipsync import LipSyncSession
        from heygemd.names import unique_output_name

        failed: list[VideoOutcome] = []
        options = {}
        if args.command == "single":
            pairs = [(args.video, args.out)]
        else:
            if args.videos is None and not args.presenters:
                print("heygemd: batch needs --videos DIR, --presenters NAMES, or both", file=sys.stderr)
                return 2
            used: set[str] = set()
            naming = settings.outbox.naming
            pairs = [
                (video, args.out / unique_output_name(naming, video.stem, used))
                for video in (videos_in(args.videos) if args.videos is not None else [])
            ]
            if args.presenters:
                wanted = args.presenters if args.presenters == "all" else [n for n in args.presenters.split(",") if n]
                found = library_videos(settings, wanted)
                for name, video, own in found.videos:
                    pairs.append((video, args.out / unique_output_name(naming, name, used)))
                    options[video] = own
                failed = [VideoOutcome(Path(name), args.out, None, error) for name, error in found.failed]
        outcomes = render_many(LipSyncSession(settings), args.audio, pairs, options=options) if pairs else []
        print(summary([*outcomes, *failed]))
        return 0 if all(o.ok for o in [*outcomes, *failed]) else 1
    if args.command in ("run", "once"):
        with notices_for(settings).start(callbacks=True) as notices:
            if args.command == "run" and settings.web.enabled:
                from heygemd.web.server import start_in_thread

                start_in_thread(settings, control_for(settings, notices))
            if args.command == "run" and settings.queue.broker:
                from heygemd.farm.intake import run_intake

                return run_intake(settings, hooks=hooks_for(notices))
            from heygemd.daemon.service import run_service

            return run_service(settings, once=args.command == "once", hooks=hooks_for(notices))
    if args.command == "worker":
        from heygemd.farm.worker import run_worker

        if args.metrics_port is not None:
            from heygemd.metrics import serve_worker_metrics

            serve_worker_metrics(args.metrics_port)
        with notices_for(settings).start(callbacks=True) as notices:
            return run_worker(settings, name=args.name, hooks=hooks_for(notices))
    if args.command == "status":
        from heygemd.status_view import show_status

        paths = settings.paths
        renderers = control_for(settings).renderers()
        farm = bool(settings.queue.broker)
        print(
            show_status(
                paths.outbox,
                args.job,
                paths.state_dir,
                inbox=paths.inbox,
                renderers=renderers,
                farm=farm,
                hours=settings.intake.hours,
            )
        )
        return 0
    if args.command == "priority":
        from heygemd.daemon.cancel import requested_by
        from heygemd.daemon.priority import shown

        status = control_for(settings).set_priority(args.job, args.priority, by=requested_by("cli"))
        print(f"{status.job_id}: priority {shown(status.priority)}")
        return 0
    if args.command in ("pause", "resume"):
        from heygemd.daemon.cancel import requested_by
        from heygemd.status_view import format_intake

        control = control_for(settings)
        who = requested_by("cli")
        state = control.pause(by=who) if args.command == "pause" else control.resume(by=who)
        print(format_intake(state), end="")
        return 0
    if args.command == "users":
        return _users(args, settings)
    if args.command == "cancel":
        from heygemd.daemon.cancel import requested_by

        with notices_for(settings).start(callbacks=False) as notices:  # a job cancelled at once is told
            answer = control_for(settings, notices).cancel(args.job, requested_by("cli"))
        if answer.state == "cancelled":
            print(f"{answer.job_id}: cancelled (it had not started); its inputs are archived for a retry")
        else:
            print(f"{answer.job_id}: cancel requested; it stops at its next batch (`heygemd status {answer.job_id}`)")
        return 0
    if args.command == "retry":
        from heygemd.daemon.cancel import requested_by

        new_id = control_for(settings).retry(args.job, engine=args.retry_engine, by=requested_by("cli"))
        print(f"{args.job}: queued again as {new_id} (`heygemd status {new_id}`)")
        return 0
    if args.command == "delete":
        from heygemd.daemon.cancel import requested_by

        control_for(settings).delete(args.job, by=requested_by("cli"))
        print(f"{args.job}: deleted (its outbox folder and archived inputs)")
        return 0
    if args.command == "presenters":
        return _presenters(args, settings)
    if args.command == "check":
        from heygemd.check import all_required_ok, format_checks, run_checks

        checks = run_checks(settings)
        print(format_checks(checks))
        return 0 if all_required_ok(checks) else 1
    if args.command == "score":
        from heygemd.score import format_report, score

        report = score(settings, args.video, audio=args.audio, source=args.source)
        if args.json:
            print(report.model_dump_json(indent=2))
        else:
            against = args.audio.name if args.audio else "its own sound"
            print(format_report(report, settings.quality, video=args.video.name, against=against), end="")
        return 0
    if args.command == "web":
        from heygemd.web.server import serve

        with notices_for(settings).start(callbacks=False) as notices:
            return serve(settings, control_for(settings, notices))
    if args.command == "demo":
        from heygemd.demo import make_demo_job

        job = make_demo_job(settings.paths.inbox / args.name)
        print(f"demo job ready: {job}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _users(args: argparse.Namespace, settings: Settings) -> int:
    from heygemd.accounts import Accounts
    from heygemd.users_view import format_accounts, read_password

    accounts = Accounts(settings.paths.state_dir)
    action = args.users_command
    if action == "list":
        print(format_accounts(accounts.all()), end="")
    elif action == "add":
        account = accounts.add(args.name, args.role, None if args.no_password else read_password())
        print(f"{account.name}: added as {account.role}")
    elif action == "remove":
        accounts.remove(args.name)
        print(f"{args.name}: removed; its API keys and sessions no longer work")
    elif action == "key" and args.revoke:
        revoked = accounts.revoke_key(args.name, args.key_name)
        print(f"{args.name}: key {revoked.name} ({revoked.id}) revoked")
    elif action == "key":
        key, secret = accounts.add_key(args.name, args.key_name)
        print(f"{args.name}: new API key {key.name} ({key.id}); it is shown this once, store it now:\n{secret}")
    elif action == "role":
        print(f"{args.name}: now {accounts.set_role(args.name, args.role).role}")
    elif action == "password":
        accounts.set_password(args.name, None if args.none else read_password())
        print(f"{args.name}: password {'removed' if args.none else 'changed'}")
    return 0


def _presenters(args: argparse.Namespace, settings: Settings) -> int:
    """``heygemd presenters [add FILE | remove NAME]``."""
    from heygemd.daemon.library import PresenterOptions
    from heygemd.status_view import format_presenters_table, format_renderers

    control = control_for(settings)

    def idle() -> str:
        """Presenters are prepared by a renderer: that none runs, as `heygemd status` says it, else nothing."""
        renderers = control.renderers()
        return "" if renderers else format_renderers(renderers, farm=bool(settings.queue.broker))

    if args.action == "add":
        options = PresenterOptions(
            display_name=args.display_name,
            face=args.face,
            loop_mode=args.loop_mode,
            engine=args.presenter_engine,
            notes=args.notes,
        )
        if not args.file.is_file():
            print(f"heygemd: {args.file}: no such file", file=sys.stderr)
            return 1
        added = control.add_presenter(args.file, name=args.name, options=options)
        print(f"{added.name}: added to the library ({added.file}); the daemon prepares it (`heygemd presenters`)")
        print(idle(), end="")
        return 0
    if args.action == "remove":
        control.remove_presenter(args.name)
        print(f"{args.name}: removed from the library")
        return 0
    presenters = control.presenters()
    print(format_presenters_table(presenters), end="")
    if any(p.state == "preparing" for p in presenters):
        print(idle(), end="")
    return 0


def control_for(settings: Settings, notices: Notices | None = None) -> Control:
    """The job actions for ``settings``, telling ``notices`` of a job a cancel finishes at once; in a farm
    (``[queue] broker``) with the farm's ways to finish a job whose task still waits in the broker at once and to
    queue such a task again with a new priority, and its workers' heartbeat records (who renders, with which
    engines)."""
    from heygemd.control import Control
    from heygemd.daemon.hooks import no_job_ended

    job_ended = notices.job_ended if notices is not None else no_job_ended
    if not settings.queue.broker:
        return Control(settings, job_ended=job_ended)
    from heygemd.farm.cancel import idle_finisher  # Celery and Redis: only in a farm
    from heygemd.farm.presence import farm_renderers
    from heygemd.farm.priority import requeuer

    return Control(
        settings,
        finish_idle=idle_finisher(settings, job_ended),
        requeue=requeuer(settings),
        job_ended=job_ended,
        renderers=farm_renderers(settings),
    )


def notices_for(settings: Settings) -> Notices:
    """What the process tells others (signed callbacks, messages for people), counted by its metrics."""
    from heygemd.metrics import NOTIFICATIONS
    from heygemd.notify.notices import Notices

    return Notices(settings, on_callback=NOTIFICATIONS.callback_changed, on_alert=NOTIFICATIONS.alert_sent)


def hooks_for(notices: Notices) -> Hooks:
    """The hooks of a process that runs the inbox or renders: ``notices`` told of jobs that end and of trouble, its
    warm engines watched by its metrics (heygemd_engine_loaded)."""
    from heygemd.daemon.lifecycle import Hooks
    from heygemd.metrics import watch_sessions

    return Hooks(job_ended=notices.job_ended, trouble=notices.trouble, broker=notices.broker, sessions=watch_sessions)
