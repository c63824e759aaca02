"""Commands → exit codes (SPEC: Commands). Nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import stat
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from egress import __version__
from egress.config import DEFAULT_CONFIG_PATH, DEFAULT_POLICY_PATH, CaptureConfig, Config, load_config
from egress.errors import EXIT_ALERTS, EXIT_OK, DependencyMissing, EgressError, InputError, UsageError
from egress.logs import configure

__all__ = ["main", "build_parser"]

log = structlog.get_logger("egress")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help=f"config file (default {DEFAULT_CONFIG_PATH} if it exists)")
    parser.add_argument("--policy", type=Path, help="policy file (overrides policy_file)")
    parser.add_argument("--geoip-country", type=Path, help="GeoIP2/GeoLite2 Country or City mmdb")
    parser.add_argument("--geoip-asn", type=Path, help="GeoLite2 ASN mmdb")
    parser.add_argument("--log-format", choices=("json", "console"), help="default: console on a terminal, else json")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _sources(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--interface", action="append", metavar="IF", help="capture live on IF (repeatable; default: capture.interfaces)")
    group.add_argument("--read", type=Path, metavar="PCAP", help="read a capture file instead of capturing live")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egress", description="Where do the cameras' packets go? Egress monitor for IP-camera networks.")
    parser.add_argument("--version", action="version", version=f"egress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="analyse recorded captures offline", description="Offline analysis: capture files in, alerts and a summary out.")
    p.add_argument("pcaps", nargs="+", type=Path, metavar="PCAP")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="json: one ECS alert record per line (NDJSON)")
    p.add_argument("--flows-out", type=Path, metavar="F", help="write every flow record as NDJSON to F")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when any alert was raised")
    _common(p)

    p = sub.add_parser("agent", help="capture → flows → enrich → Kafka flows topic", description="The capture agent: publishes flow records to Kafka.")
    _sources(p)
    _common(p)

    p = sub.add_parser("rules", help="Kafka flows topic → policy → metrics and alerts", description="The rules consumer (one member of a consumer group).")
    p.add_argument("--alerts-out", type=Path, metavar="F", help="also append alert records as NDJSON to F")
    _common(p)

    p = sub.add_parser("run", help="agent and rules in one process, no Kafka", description="Agent and rules joined by an in-process bus.")
    _sources(p)
    p.add_argument("--alerts-out", type=Path, metavar="F", help="alert records as NDJSON to F (default stdout)")
    p.add_argument("--linger", action="store_true", help="after the file, keep serving metrics until SIGTERM")
    _common(p)

    p = sub.add_parser("check", help="validate config and policy", description="Validate the config and policy files; print each problem with file and line.")
    _common(p)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.policy is not None:
        out["policy_file"] = args.policy
    geoip = {}
    if args.geoip_country is not None:
        geoip["country_db"] = args.geoip_country
    if args.geoip_asn is not None:
        geoip["asn_db"] = args.geoip_asn
    if geoip:
        out["geoip"] = geoip
    return out


def _load_policy(config: Config, explicit: bool) -> Any:
    from egress.policy.schema import default_policy, load_policy

    if not explicit and config.policy_file == DEFAULT_POLICY_PATH and not DEFAULT_POLICY_PATH.exists():
        log.warning("policy_default", reason=f"{DEFAULT_POLICY_PATH} not found; every egress is unexpected under the built-in policy")
        return default_policy()
    return load_policy(config.policy_file)


def _geoip_paths(config: Config, policy: Any) -> tuple[Path | None, Path | None]:
    """A database that was not asked for and is not at its default place is skipped, unless
    the policy needs it: a rule on countries or ASNs must never fail silent."""
    from egress.config import GeoipConfig

    defaults = GeoipConfig()
    needs_country = any(r.countries for g in policy.groups for r in (*g.allow, *g.deny))
    needs_asn = any(r.asns for g in policy.groups for r in (*g.allow, *g.deny))
    paths: list[Path | None] = []
    for kind, path, default, needed in (
        ("country", config.geoip.country_db, defaults.country_db, needs_country),
        ("asn", config.geoip.asn_db, defaults.asn_db, needs_asn),
    ):
        if path is not None and path == default and not path.exists():
            if needed:
                rules_on = "countries" if kind == "country" else "ASNs"
                raise DependencyMissing(f"{path}: GeoIP {kind} database not found, and the policy has rules on {rules_on} (give --geoip-{kind} or run geoipupdate)")
            log.warning("geoip_missing", database=kind, path=str(path), effect=f"{kind} fields stay empty")
            path = None
        paths.append(path)
    return paths[0], paths[1]


def _chain_factory(config: Config, policy: Any) -> Callable[[], Any]:
    """Decide the GeoIP files once (and warn once); each call builds a fresh enricher chain."""
    from egress.enrich import build_chain
    from egress.enrich.oui import ManufNotFoundError
    from egress.localnet import LocalNetworks

    country, asn = _geoip_paths(config, policy)
    local = LocalNetworks(policy.local_networks)

    def make() -> Any:
        try:
            return build_chain(local, country, asn)
        except ManufNotFoundError as exc:
            raise DependencyMissing(str(exc.strerror)) from None

    return make


def cmd_analyze(args: argparse.Namespace, config: Config) -> int:
    from egress.capture.tshark import tshark_path
    from egress.policy.evaluate import Evaluator
    from egress.services.analyze import analyze_files
    from egress.sinks.report import Report

    tshark_path()
    for path in args.pcaps:
        if not path.exists():
            raise InputError(f"{path}: no such file")
    policy = _load_policy(config, args.policy is not None or args.config is not None)
    chain = _chain_factory(config, policy)()
    with ExitStack() as stack:
        flows_out = stack.enter_context(args.flows_out.open("wb")) if args.flows_out else None
        progress = stack.enter_context(_Progress(args.pcaps)) if sys.stderr.isatty() else None
        report = Report(args.format, sys.stdout)
        result = analyze_files(
            args.pcaps, config, Evaluator(policy), chain, report,
            flows_out=flows_out, progress=progress.advance if progress else None,
        )  # fmt: skip
        if progress is not None:
            progress.stop()
        report.finish()
    log.info("analysis_done", packets=result.packets, **report.summary())
    if result.input_errors:
        raise InputError("\n".join(result.input_errors))
    return EXIT_ALERTS if args.fail_on_alert and result.alerts else EXIT_OK


def _plan(args: argparse.Namespace, config: Config) -> tuple[Any, Any]:
    from egress.capture.tshark import tshark_path
    from egress.localnet import LocalNetworks
    from egress.services.serve import AgentPlan

    tshark_path()
    interfaces: tuple[str, ...] = ()
    if args.read is not None:
        if not args.read.exists():
            raise InputError(f"{args.read}: no such file")
    else:
        interfaces = tuple(args.interface or config.capture.interfaces)
        if not interfaces:
            raise UsageError("nothing to capture: give --interface IF or --read PCAP, or set capture.interfaces")
        try:
            CaptureConfig(interfaces=interfaces)  # the same name check as the config file's
        except ValidationError as exc:
            raise UsageError(f"--interface: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    policy = _load_policy(config, args.policy is not None or args.config is not None)
    chains = _chain_factory(config, policy)
    chains()  # fail at start on a missing database or registry
    return AgentPlan(config, LocalNetworks(policy.local_networks), chains, args.read, interfaces), policy


def _policy_path(config: Config, policy: Any) -> Path | None:
    return None if policy.name == "built-in-default" else config.policy_file


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    from egress.services.serve import agent_main

    plan, _ = _plan(args, config)
    return asyncio.run(agent_main(plan))


def cmd_rules(args: argparse.Namespace, config: Config) -> int:
    from egress.policy.evaluate import Evaluator
    from egress.services.serve import rules_main

    policy = _load_policy(config, args.policy is not None or args.config is not None)
    return asyncio.run(rules_main(config, Evaluator(policy), _policy_path(config, policy), args.alerts_out))


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from egress.policy.evaluate import Evaluator
    from egress.services.serve import run_main

    plan, policy = _plan(args, config)
    return asyncio.run(run_main(plan, Evaluator(policy), _policy_path(config, policy), args.alerts_out, args.linger))


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from egress.policy.schema import load_policy

    policy = load_policy(config.policy_file)
    rules = sum(len(g.allow) + len(g.deny) for g in policy.groups)
    print(f"config OK: {args.config or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else 'built-in defaults')}")
    print(f"policy OK: {config.policy_file} ({len(policy.groups)} groups, {rules} rules, default_verdict {policy.default_verdict})")
    return EXIT_OK


class _Progress:
    """A progress bar on stderr over the bytes of all input files."""

    def __init__(self, files: Sequence[Path]) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        sizes = [p.stat() for p in files if p.exists()]
        total = sum(st.st_size for st in sizes) if all(stat.S_ISREG(st.st_mode) for st in sizes) else None  # a pipe: no end known
        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=__import__("rich.console").console.Console(file=sys.stderr), transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task("analysing", total=total)

    def __enter__(self) -> _Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def advance(self, nbytes: int) -> None:
        self._bar.advance(self._task, nbytes)

    def stop(self) -> None:
        self._bar.stop()


COMMANDS = {"analyze": cmd_analyze, "agent": cmd_agent, "rules": cmd_rules, "run": cmd_run, "check": cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level)
    try:
        config = load_config(args.config, _overrides(args))
        return COMMANDS[args.command](args, config)
    except EgressError as exc:
        for line in str(exc).splitlines():
            print(f"egress: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("egress: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
