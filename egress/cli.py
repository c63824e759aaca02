"""Commands → exit codes (SPEC: Commands). Nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import stat
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import structlog

from egress import __version__
from egress.config import DEFAULT_CONFIG_PATH, Config, ResolvedConfig, resolve_config
from egress.errors import EXIT_ALERTS, EXIT_OK, EgressError, InputError, UsageError
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


def _baseline_option(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--baseline", type=Path, metavar="F", required=required,
                        help="the learned baseline file (loaded at start, replaced at exit and every minute; overrides baseline_file)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egress", description="Where do the cameras' packets go? Egress monitor for IP-camera networks.")
    parser.add_argument("--version", action="version", version=f"egress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="analyse recorded captures offline", description="Offline analysis: capture files in, alerts and a summary out (a table, NDJSON, CSV, or a self-contained HTML report), or the device inventory.")
    p.add_argument("pcaps", nargs="+", type=Path, metavar="PCAP")
    p.add_argument("--format", choices=("table", "json", "csv", "html", "devices", "devices-csv", "devices-json"), default="table",
                   help="json: one ECS alert record per line (NDJSON); html: a self-contained page (charts, devices, alerts with filters) that loads nothing from anywhere; "
                        "devices, devices-csv, devices-json: the device inventory (every device that sent a frame, egress or not) as a table, CSV or one record per line")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, metavar="F", help="write the report (the chosen format) to F instead of standard output (`-`)")
    p.add_argument("--report", type=Path, metavar="F.html", help="also write the HTML report to F, beside the chosen format")
    p.add_argument("--flows-out", type=Path, metavar="F", help="write every flow record as NDJSON to F")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 1 when any alert was raised")
    _baseline_option(p)
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
    _baseline_option(p)
    _common(p)

    p = sub.add_parser("baseline", help="the learned baseline: learn, show, approve, forget, export",
                       description="The learned baseline of the policy's groups: a file given with --baseline, or with --config and no --baseline the Kafka topic kafka.baseline_topic of `egress rules`.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser("learn", help="learn from captures: they are the learning period of every scope they show")
    v.add_argument("pcaps", nargs="+", type=Path, metavar="PCAP")
    _baseline_option(v, required=True)
    _common(v)
    v = verbs.add_parser("show", help="the learned keys per group, with state, first and last seen, flows, bytes")
    v.add_argument("--format", choices=("table", "json"), default="table")
    v.add_argument("--group", help="only this group")
    _baseline_option(v)
    _common(v)
    for verb, what in (("approve", "learned: alerted keys become known"), ("forget", "removed: the next flow is judged anew")):
        v = verbs.add_parser(verb, help=f"the keys given are {what}")
        v.add_argument("keys", nargs="+", metavar="KEY", help="scope:identity:port, as `show` prints it")
        _baseline_option(v)
        _common(v)
    v = verbs.add_parser("export", help="the learned keys as policy allow entries, to paste into a group's allow:")
    v.add_argument("--group", help="only this group")
    _baseline_option(v)
    _common(v)

    p = sub.add_parser("check", help="validate config and policy, pre-flight the host",
                       description="Validate the config and policy files, and with a config file check what it names on this host (GeoIP files, interfaces, spool, metrics address); print each problem with file and line.")
    p.add_argument("--show-config", action="store_true", help="print the resolved config as YAML, each value with its origin, and exit")
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
    if getattr(args, "baseline", None) is not None:
        out["baseline_file"] = args.baseline
    return out


def _explicit_policy(args: argparse.Namespace) -> bool:
    return args.policy is not None or args.config is not None


def cmd_analyze(args: argparse.Namespace, config: Config) -> int:
    from egress.capture import early, tshark

    tshark.start_early()  # while the rest of egress loads (the `egress` command started one already)
    try:
        return _analyze(args, config)
    finally:
        early.discard_early()


def _analyze(args: argparse.Namespace, config: Config) -> int:
    from egress.capture.early import start_early
    from egress.inputs import check_inputs, choose_policy
    from egress.localnet import LocalNetworks

    check_inputs(args.pcaps)
    policy, policy_path = choose_policy(config, _explicit_policy(args))
    start_early(args.pcaps[0], LocalNetworks(policy.local_networks).networks, config.capture.bpf)  # as compose's imports load
    from egress import compose
    from egress.services.serve import in_process_main
    from egress.sinks.output import ReportFile, is_stdout
    from egress.sinks.report import Report

    if args.report is not None and is_stdout(args.report) and is_stdout(args.output):
        raise UsageError(f"--report -: the {args.format} report goes to standard output already (give -o F, or --report a file)")
    with ExitStack() as stack:
        outputs = [stack.enter_context(ReportFile(args.output, f"{args.format} report"))]
        if args.report is not None:
            outputs.append(stack.enter_context(ReportFile(args.report, "HTML report")))
        progress = stack.enter_context(_Progress(args.pcaps)) if sys.stderr.isatty() else None
        report = Report(args.format, outputs[0].stream, html=outputs[1].stream if args.report is not None else None,
                        inputs=[str(p) for p in args.pcaps], names={d.mac: d.name for d in policy.devices}, policy=str(policy_path or "built-in"))  # fmt: skip
        analysis = compose.analyze(config, policy, args.pcaps, report, flows_out=args.flows_out, progress=progress.advance if progress else None)
        asyncio.run(in_process_main(analysis.parts))
        if progress is not None:
            progress.stop()
        if len(analysis.input_errors) < len(args.pcaps):  # something was read: its report
            report.finish(analysis.packets, analysis.warnings, analysis.inventory.records())
            for output in outputs:
                output.commit()
    log.info("analysis_done", packets=analysis.packets, **report.summary())
    if analysis.input_errors:
        raise InputError("\n".join(analysis.input_errors))
    return EXIT_ALERTS if args.fail_on_alert and analysis.alerts else EXIT_OK


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    from egress import compose
    from egress.services.serve import agent_main

    return asyncio.run(agent_main(compose.agent(config, _explicit_policy(args), args.read, args.interface)))


def cmd_rules(args: argparse.Namespace, config: Config) -> int:
    from egress import compose
    from egress.services.serve import rules_main

    components, stage, stop = compose.rules(config, _explicit_policy(args), args.alerts_out)
    return asyncio.run(rules_main(components, stage, stop, config.kafka.flows_topic, config.kafka.group_id))


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from egress import compose
    from egress.services.serve import in_process_main

    return asyncio.run(in_process_main(compose.run(config, _explicit_policy(args), args.read, args.interface, args.alerts_out, args.linger)))


def cmd_baseline(args: argparse.Namespace, config: Config) -> int:
    from egress.baseline import commands

    return commands.run(args.verb, args, config, _explicit_policy(args))


def cmd_check(args: argparse.Namespace, resolved: ResolvedConfig) -> int:
    """Config, policy, then the host (`preflight`); every problem before the exit: a wrong
    value (2) outweighs a missing dependency (3), which has to wait for it anyway."""
    from egress.policy.schema import load_policy
    from egress.preflight import preflight

    from egress.baseline.settings import describe, resolve

    if args.show_config:
        sys.stdout.write(resolved.as_yaml())
        return EXIT_OK
    config = resolved.config
    policy = load_policy(config.policy_file)
    rules = sum(len(g.allow) + len(g.deny) for g in policy.groups)
    print(f"config OK: {resolved.file.path if resolved.file else 'built-in defaults'}")
    print(f"policy OK: {config.policy_file} ({len(policy.groups)} groups, {rules} rules, default_verdict {policy.default_verdict})")
    for pack in policy.included:
        print(f"  included {pack.path} (version {pack.version}): {len(pack.sets)} sets: {', '.join(pack.sets)}")
    for warning in policy.warnings:
        print(f"egress: warning: {warning}", file=sys.stderr)
    if policy.baseline is not None or any(g.baseline is not None for g in policy.groups):
        for group in policy.groups:
            print(f"  group {group.name}: baseline {describe(resolve(policy.baseline, group.baseline))}")
        print(f"  devices in no group: baseline {describe(resolve(policy.baseline, None))}")
    findings = preflight(resolved, policy)
    for finding in findings:
        print(f"egress: {'warning: ' if not finding.exit_code else ''}{finding.message}", file=sys.stderr)
    codes = {finding.exit_code for finding in findings}
    if codes - {0}:
        return 2 if 2 in codes else 3
    web = " and its web config" if config.metrics.web_config is not None else ""
    print(f"host OK: GeoIP databases, capture interfaces, spool directory, metrics address{web}" if resolved.file
          else "host: only values from flags and EGRESS_* variables checked (no config file)")  # fmt: skip
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


COMMANDS = {"analyze": cmd_analyze, "agent": cmd_agent, "rules": cmd_rules, "run": cmd_run, "baseline": cmd_baseline}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level)
    try:
        resolved = resolve_config(args.config, _overrides(args))
        if args.command == "check":  # the one command that tells where each value came from
            return cmd_check(args, resolved)
        return COMMANDS[args.command](args, resolved.config)
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
