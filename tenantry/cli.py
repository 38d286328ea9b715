"""The `tenantry` command: serve, worker, db upgrade, admin create, audit/idempotency purge, spec check/diff/bundle."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from tenantry.settings import Settings, SettingsError

DEMO_EMAIL = "demo@tenantry.example.com"


def _register_domains() -> None:
    """Registers every domain plug-in (services.DOMAINS) with the core, as create_app does."""
    from services import register_all
    from tenantry.host import Host

    register_all(Host())


def _database(settings: Settings) -> None:
    from tenantry.db import init_database

    init_database(settings.database_url, settings.db_pool_size)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    """Applies pending migrations."""
    from tenantry.db import upgrade

    settings = Settings.from_env()
    _database(settings)
    applied = upgrade()
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


def _ensure_operator(email: str, password: str) -> str:
    from models import User, accounts, database
    from tenantry.security import hash_password

    with database.connection_context():
        existing = (
            User.select()
            .where(
                User.is_platform_operator == True,  # noqa: E712
                User.email_normalized == email.strip().casefold(),
            )
            .first()
        )
        if existing:
            accounts.change_user(existing, {}, hash_password(password))
            return "updated"
        User.insert_many_checked(
            [
                User.build(
                    None,
                    email,
                    hash_password(password),
                    "Platform",
                    "Operator",
                    role="owner",
                    is_platform_operator=True,
                )
            ]
        )
        return "created"


def cmd_admin_create(args: argparse.Namespace) -> int:
    """Creates the platform operator, or resets its password if it exists (idempotent)."""
    if not 10 <= len(args.password) <= 128:
        print("error: the password must be 10 to 128 characters", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    _database(settings)
    print(f"platform operator {args.email} {_ensure_operator(args.email, args.password)}")
    return 0


_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """Returns the seconds in `90d`, `12h`, `30m` or `45s`; raises ValueError otherwise."""
    value, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h, 30m or 45s")
    return int(value) * _DURATION_UNITS[unit]


def _cutoff(older_than: str) -> Any:
    """Returns the moment `older_than` (`90d`, `12h`) ago as naive UTC, with the database bound; None
    (after printing why) when it is not a duration."""
    from datetime import timedelta

    from models.base import utcnow

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    _database(Settings.from_env())
    return utcnow() - timedelta(seconds=seconds)


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Removes audit entries older than the given age, keeping each chain verifiable from its new start."""
    from models import AuditEntry, database

    cutoff = _cutoff(args.older_than)
    if cutoff is None:
        return 2
    with database.connection_context():
        removed = AuditEntry.purge(cutoff)
    print(json.dumps({"purged": removed, "entries": sum(removed.values())}))
    return 0


def cmd_events_purge(args: argparse.Namespace) -> int:
    """Removes events older than --older-than, and what the plug-ins remove with them (finished
    webhook deliveries), except what a consumer still needs."""
    from tenantry import events

    cutoff = _cutoff(args.older_than)
    if cutoff is None:
        return 2
    _register_domains()
    removed = events.purge_all(cutoff)
    events_removed = removed[-1][2]
    others = "".join(f" and {count} {what}" for _, what, count in removed[:-1])
    print(f"removed {events_removed} event(s){others}")
    return 0


def cmd_idempotency_purge(_args: argparse.Namespace) -> int:
    """Removes idempotency records past their 24 hours."""
    from models import IdempotencyRecord, database

    settings = Settings.from_env()
    _database(settings)
    with database.connection_context():
        print(json.dumps({"purged": IdempotencyRecord.purge_expired()}))
    return 0


def _demo(settings: Settings, host: str, port: int) -> None:
    from models import Tenant, User, accounts, database
    from tenantry.security import hash_password

    password = secrets.token_urlsafe(12)
    with database.connection_context():
        owner = User.select().where(User.email_normalized == DEMO_EMAIL).first()
        if owner is None:
            accounts.register(
                "Demo Company",
                None,
                User.build(None, DEMO_EMAIL, hash_password(password), "Demo", "Owner", role="owner"),
            )
            owner = User.select().where(User.email_normalized == DEMO_EMAIL).first()
        else:
            accounts.change_user(owner, {"status": "active"}, hash_password(password))
        tenant = Tenant.get_by_id(owner.tenant_id)
    body = json.dumps({"email": DEMO_EMAIL, "password": password})
    print(
        f"\nDemo tenant {tenant.name} ({tenant.id}), owner {DEMO_EMAIL}, password {password}\n"
        f"Log in:\n  curl -s -X POST http://{host}:{port}/v1/auth/login "
        f"-H 'Content-Type: application/json' -d '{body}'\n"
        f"Docs: http://{host}:{port}/docs/\n",
        flush=True,
    )


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """Returns a socket listening on host:port with SO_REUSEPORT: one of several sharing the port.

    It is made with proto IPPROTO_TCP, not 0 as uvicorn's own: asyncio turns on TCP_NODELAY only for
    connections accepted on such a socket. Without it (uvicorn with --workers), a response written
    as headers then body waits for the client's delayed ACK: 44 ms a request on a keep-alive
    connection, measured, which capped the whole server at about 20 requests/s per connection.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class WorkerSocket(socket.socket):
    """The port, held by the supervisor; each worker process gets a listening socket of its own on it.

    uvicorn's workers share one listening socket, and each worker's event loop accepts every
    connection waiting when it wakes: a client's keep-alive connections (a load balancer's pool,
    wrk's 32) all land on one worker while the others idle (measured: 32 of 32 on one of two
    workers, half the machine unused). Here the supervisor binds the port without listening, and
    this socket, pickled into each spawned worker, unpickles as that worker's own SO_REUSEPORT
    listener, so the kernel spreads new connections across the workers.
    """

    def bind_port(self, host: str, port: int, backlog: int) -> None:
        """Reserves host:port (port 0: a free one) for the workers; raises OSError when it is in use.

        SO_REUSEPORT would let a second server on the port join this one's workers, so the port is
        first bound without it, as uvicorn's own socket would be: that fails while anything listens
        on it, another Tenantry included.
        """
        with socket.socket(self.family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.bind((host, port))
        self._worker_args = (host, port, backlog)

    def __reduce__(self) -> tuple[Any, ...]:
        return _listen, self._worker_args


def _run_workers(config: Any) -> None:
    """Runs `config.workers` uvicorn worker processes, each accepting on its own socket (WorkerSocket)."""
    from uvicorn.supervisors import Multiprocess

    sock = WorkerSocket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind_port(config.host, config.port, config.backlog)
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def cmd_serve(args: argparse.Namespace) -> int:
    """Serves the API on uvicorn with one worker process per core by default."""
    import uvicorn

    from tenantry.counters import TABLE_ENV
    from tenantry.db import upgrade
    from tenantry.logs import configure_logging

    _register_domains()  # their settings sections are checked here too, before any worker starts
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    _database(settings)
    if settings.is_sqlite:
        upgrade()  # the embedded default is ready to use with no separate step
    demo_worker = None
    if args.demo:
        # Before any credential is printed: a second demo on a busy port must not reset the
        # first one's password and print a login that the other server answers.
        problem = _port_problem(args.host, args.port)
        if problem is not None:
            print(
                f"error: cannot listen on {args.host}:{args.port}: {problem} (is another server running? "
                "stop it, or pick another port with --port)",
                file=sys.stderr,
            )
            return 3
        _demo(settings, args.host, args.port)
        _admit_loopback(args.host)
        demo_worker = _start_demo_worker()
        # One uvicorn worker ends by re-raising the SIGTERM it caught, which would end this process
        # before the `finally` below stops the worker: here the re-raised signal unwinds instead.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workers = args.workers or os.cpu_count() or 1
    os.environ.pop(TABLE_ENV, None)  # the workers share this server's own table, or none
    table = None
    if workers > 1 and not settings.redis_url:
        table, workers = _rate_limit_table(settings, workers)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tenantry-metrics-")
    config = uvicorn.Config(
        "tenantry.asgi:application",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        loop="uvloop",
        http="httptools",  # C event loop and HTTP parser (dependencies): less CPU a request
        # uvicorn would trust X-Forwarded-For from 127.0.0.1 by default; the client address is
        # decided once, by TENANTRY_TRUSTED_PROXIES (tenantry.net), and spoofing cannot pass.
        proxy_headers=False,
    )
    try:
        if workers > 1:
            _run_workers(config)
        else:
            uvicorn.Server(config).run()
    finally:
        if table is not None:
            table.unlink(missing_ok=True)
        if demo_worker is not None:
            _stop(demo_worker)
    return 0


def _exit_on_sigterm(*_: Any) -> None:
    raise SystemExit(0)


def _port_problem(host: str, port: int) -> str | None:
    """Returns why host:port cannot be listened on now (in use, not an address here), or None."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # fails while anything listens on it, another Tenantry included
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


#: What the demo adds to the outbound allow-list: this machine's own loopback, for local receivers.
DEMO_ALLOWLIST = ("127.0.0.0/8", "::1/128")


def _listens_on_loopback_only(host: str) -> bool:
    """True when `host` (serve's --host) is a loopback address or name: no other machine reaches the server."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _admit_loopback(host: str) -> None:
    """Lets this demo's processes (server and worker) deliver webhooks to receivers on this machine,
    when the demo listens on loopback only. Listening beyond it (`--host 0.0.0.0`), anyone who can
    reach the server may sign up (self-signup is on) and would aim webhooks at this machine's own
    services (an SSRF): then loopback stays refused, as outside a demo."""
    if not _listens_on_loopback_only(host):
        print(
            f"Webhooks: this demo listens on {host}, beyond this machine, so loopback is not admitted as a "
            "webhook target (422 URL_NOT_ALLOWED); listen on 127.0.0.1 for local receivers, or admit a range "
            "with TENANTRY_OUTBOUND_ALLOWLIST.",
            flush=True,
        )
        return
    current = [part.strip() for part in os.environ.get("TENANTRY_OUTBOUND_ALLOWLIST", "").split(",") if part.strip()]
    added = [net for net in DEMO_ALLOWLIST if net not in current]
    os.environ["TENANTRY_OUTBOUND_ALLOWLIST"] = ",".join([*current, *added])
    if added:
        print(
            f"Webhooks: this demo sets TENANTRY_OUTBOUND_ALLOWLIST={os.environ['TENANTRY_OUTBOUND_ALLOWLIST']} "
            "for its own processes, so webhooks can reach receivers on this machine (http://127.0.0.1:...).\n"
            "  Outside a demo, loopback and private addresses are refused (422 URL_NOT_ALLOWED) unless the "
            "operator admits their range there.",
            flush=True,
        )


def _start_demo_worker() -> Any:
    """Starts `tenantry worker` as a child that ends with this server (webhooks are delivered by it)."""
    import subprocess

    def die_with_parent() -> None:  # Linux: the kernel ends the worker if this server is killed outright
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    worker = subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "worker"], env=os.environ.copy(), preexec_fn=die_with_parent
    )  # before any thread starts: preexec_fn is safe
    print(
        f"Webhook worker: started (pid {worker.pid}); it delivers webhooks and stops with this server. "
        "Outside the demo, run `tenantry worker` next to `tenantry serve`.\n",
        flush=True,
    )
    return worker


def _stop(process: Any) -> None:
    """Ends a child process: SIGTERM (it finishes what it is delivering), then SIGKILL after 15 s."""
    import subprocess

    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _rate_limit_table(settings: Settings, workers: int) -> tuple[Path | None, int]:
    """Creates the rate-limit table every worker maps (several workers, no Redis), named to them in the environment.

    Returns (its path, the workers to start). When no table can be made, nothing can share the
    counters, so one worker is started (and the log says so): a limit counted by each of several
    processes alone would let several times its budget through. One worker needs no file: its
    table is in its own memory (uvicorn ends a single worker by re-raising the signal, which would
    leave a file behind).
    """
    import logging

    from tenantry.counters import TABLE_ENV, create_table

    try:
        table = create_table(settings.rate_limit_slots)
    except OSError as exc:
        logging.getLogger("tenantry.limits").warning(
            "no shared rate-limit table (%s): serving with one worker so the limits hold; set REDIS_URL to run more",
            exc,
        )
        return None, 1
    os.environ[TABLE_ENV] = str(table)
    return table, workers


def cmd_spec_check(_args: argparse.Namespace) -> int:
    """Checks the spec against itself and the handlers; prints each problem."""
    from tenantry.spec import bundle, check

    settings_path = Path(os.environ.get("TENANTRY_SPEC_PATH", Settings().spec_path))
    problems = check(bundle(settings_path))
    for problem in problems:
        print(f"spec: {problem}")
    if problems:
        return 1
    print("spec: ok")
    return 0


def cmd_spec_bundle(args: argparse.Namespace) -> int:
    """Prints the bundled spec as JSON."""
    from tenantry.spec import bundle

    text = json.dumps(bundle(Settings().spec_path), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


def _load_contract(path: str) -> dict:
    from tenantry.spec import bundle

    file = Path(path)
    if file.suffix == ".json":
        return json.loads(file.read_text())
    return bundle(file)


def cmd_spec_diff(args: argparse.Namespace) -> int:
    """Prints breaking and non-breaking changes from OLD to NEW; exit 1 when any change breaks."""
    from tenantry.specdiff import diff

    report = diff(_load_contract(args.old), _load_contract(args.new))
    print(f"breaking changes: {len(report.breaking)}")
    for line in report.breaking:
        print(f"  BREAKING {line}")
    print(f"non-breaking changes: {len(report.non_breaking)}")
    for line in report.non_breaking:
        print(f"  {line}")
    return 1 if report.breaking else 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Runs jobs (webhook deliveries among them) until SIGTERM or SIGINT; then lets the running ones
    finish within TENANTRY_WORKER_GRACE and hands back any still running."""
    import signal

    from tenantry import jobs, periodic
    from tenantry.db import init_database
    from tenantry.host import configure as configure_plugins
    from tenantry.logs import configure_logging
    from tenantry.security import SecretBox, TokenService, install_token_service

    _register_domains()  # the events a worker emits reach the subscribers (webhook fan-out)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    init_database(settings.database_url, max(settings.db_pool_size, args.concurrency + 2), settings.db_role or None)
    install_token_service(TokenService(settings.secret_key, settings.access_token_ttl), SecretBox(settings.secret_key))
    settings = settings.with_sections()
    periodic.register_core(settings)
    configure_plugins(settings)
    jobs.configure_wakeup(settings)
    worker = jobs.Worker(
        settings, kinds=args.kinds or None, concurrency=args.concurrency, scheduler=periodic.schedule_due
    )
    if problems := jobs.unrunnable_periodics():
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    if not worker.served():
        print(f"error: no registered job kind matches {' '.join(args.kinds)}", file=sys.stderr)
        return 2
    try:
        worker.hold_sqlite_lock()
    except jobs.WorkerLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.once:
        ran = worker.run_due()
        print(f"ran {ran} jobs; attempted {worker.ran.get('webhook.deliver', 0)} deliveries")
        return 0
    if args.metrics_port:
        from tenantry.metrics import serve_job_metrics

        try:
            serve_job_metrics(args.metrics_port)
        except OSError as exc:  # the port is taken (or not ours to bind): say so, not a traceback
            print(
                f"error: cannot serve job metrics on 127.0.0.1:{args.metrics_port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    where = "SQLite: this is the only worker for this database" if settings.is_sqlite else "PostgreSQL"
    print(
        f"tenantry worker {worker.owner}: running {', '.join(sorted(worker.served()))} ({where})",
        flush=True,
    )
    worker.run()
    return 0


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _at_least_one(text: str) -> int:
    """argparse's type for a count of at least 1 (a worker with no slot would run nothing, forever)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    """argparse's type for a TCP port to listen on."""
    value = _whole(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser for the `tenantry` command."""
    parser = argparse.ArgumentParser(prog="tenantry", description="Tenantry: a multi-tenant API server.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="create a demo tenant, print how to log in, run the webhook worker alongside and let "
        "webhooks reach this machine's loopback",
    )
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)

    admin = sub.add_parser("admin", help="platform operator commands").add_subparsers(
        dest="admin_command", required=True
    )
    create = admin.add_parser("create", help="create the platform operator (idempotent)")
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.set_defaults(func=cmd_admin_create)

    audit = sub.add_parser("audit", help="audit trail commands").add_subparsers(dest="audit_command", required=True)
    purge = audit.add_parser("purge", help="remove expired entries; each chain stays verifiable from its new start")
    purge.add_argument("--older-than", required=True, metavar="AGE", help="such as 90d, 12h, 30m")
    purge.set_defaults(func=cmd_audit_purge)

    idem = sub.add_parser("idempotency", help="idempotency record commands").add_subparsers(
        dest="idempotency_command", required=True
    )
    idem.add_parser("purge", help="remove records past their 24 hours").set_defaults(func=cmd_idempotency_purge)

    events = sub.add_parser("events", help="event commands").add_subparsers(dest="events_command", required=True)
    events_purge = events.add_parser("purge", help="remove old events and finished webhook deliveries")
    events_purge.add_argument("--older-than", required=True, help="an age such as 30d or 12h")
    events_purge.set_defaults(func=cmd_events_purge)

    worker = sub.add_parser("worker", help="run background jobs (webhook deliveries among them) until stopped")
    worker.add_argument(
        "--kinds", nargs="+", metavar="PATTERN", help="run only the job kinds matching these globs (webhook.*)"
    )
    worker.add_argument("--concurrency", type=_at_least_one, default=8, help="jobs run at once (default 8)")
    worker.add_argument("--once", action="store_true", help="run what is due now, then exit")
    worker.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve this worker's job metrics (durations, failures) for Prometheus on 127.0.0.1:PORT",
    )
    worker.set_defaults(func=cmd_worker)

    spec = sub.add_parser("spec", help="contract commands").add_subparsers(dest="spec_command", required=True)
    spec.add_parser("check", help="validate the spec against itself and the handlers").set_defaults(func=cmd_spec_check)
    diff_cmd = spec.add_parser("diff", help="report breaking and non-breaking changes from OLD to NEW")
    diff_cmd.add_argument("old", help="a bundled .json contract or a root .yaml file")
    diff_cmd.add_argument("new", help="a bundled .json contract or a root .yaml file")
    diff_cmd.set_defaults(func=cmd_spec_diff)
    bundle_cmd = spec.add_parser("bundle", help="print the bundled spec")
    bundle_cmd.add_argument("--output", "-o")
    bundle_cmd.set_defaults(func=cmd_spec_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the `tenantry` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
