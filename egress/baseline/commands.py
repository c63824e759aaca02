"""`egress baseline learn|show|approve|forget|export`, on a baseline file (`--baseline F`)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from typing import IO, Any

import yaml
from rich.console import Console
from rich.table import Table

from egress.baseline.keys import EPHEMERAL
from egress.baseline.state import BaselineState, Entry, Key, entry_doc, key_text, parse_key
from egress.baseline.store import BaselineFile
from egress.codec import iso
from egress.config import Config
from egress.errors import EXIT_OK, InputError, UsageError

__all__ = ["run", "allow_entries"]


def run(verb: str, args: argparse.Namespace, config: Config, explicit_policy: bool) -> int:
    if verb == "learn":
        return _learn(args, config, explicit_policy)
    if config.baseline_file is None and args.config is None:
        raise UsageError("give --baseline F (a baseline file), or --config F to act on the Kafka topic kafka.baseline_topic")
    state = BaselineState()
    store: BaselineFile | None = None
    where = str(config.baseline_file) if config.baseline_file is not None else f"Kafka topic {config.kafka.baseline_topic}"
    if config.baseline_file is not None:
        store = BaselineFile(config.baseline_file, state)
        store.load()
    else:
        asyncio.run(_on_topic(config, state, None))
    if verb == "show":
        _show(state, args.format, args.group, sys.stdout)
    elif verb == "export":
        sys.stdout.write(allow_entries(state, args.group))
    else:
        keys = [_key(text) for text in args.keys]
        missing = [key_text(k) for k in keys if k not in state.entries]
        if missing:
            raise UsageError(f"{where}: no such key: {', '.join(missing)} (see egress baseline show)")
        for key in keys:
            if verb == "approve":
                state.restate(key, "learned")
            else:
                state.remove(key)
        if store is not None:
            store.save()
        else:
            asyncio.run(_on_topic(config, state, {("key", "\x1f".join(k)) for k in keys}))
        done = "approved" if verb == "approve" else "forgot"
        print(f"{done} {len(keys)} key{'s' if len(keys) != 1 else ''} in {where}")
    return EXIT_OK


async def _on_topic(config: Config, state: BaselineState, changed: set[tuple[str, str]] | None) -> None:
    """Read the topic whole into `state`, or (with `changed`) write those items of it."""
    from egress.baseline.topic import BaselineTopic
    from egress.bus.kafka import KafkaPublisher

    publisher = KafkaPublisher(config.kafka)
    topic = BaselineTopic(config.kafka, state, publisher)
    if changed is None:
        await topic.start()
        await topic.stop()
        return
    await publisher.start()
    try:
        state.changed = changed
        await topic.flush()
    finally:
        await publisher.stop()


def _key(text: str) -> Key:
    try:
        return parse_key(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _learn(args: argparse.Namespace, config: Config, explicit_policy: bool) -> int:
    from egress import compose
    from egress.inputs import check_inputs, choose_policy
    from egress.services.serve import in_process_main
    from egress.sinks.report import Report

    check_inputs(args.pcaps)
    policy, _ = choose_policy(config, explicit_policy)
    if policy.baseline is None and not any(g.baseline is not None for g in policy.groups):
        raise UsageError(f"{config.policy_file}: the policy has no baseline: section, so nothing would be learned")
    analysis = compose.analyze(config, policy, args.pcaps, Report("json", io.StringIO()), learn_everything=True)
    asyncio.run(in_process_main(analysis.parts))
    learner = analysis.parts.stage.evaluator.learner
    learner.end_learning()
    store = next(c for c in analysis.parts.components if isinstance(c, BaselineFile))
    store.save()
    state = learner.state
    print(f"learned {len(state.entries)} keys of {len(learner.latest)} scopes from {analysis.flows} flows into {store.path}; learning has ended for them")
    if analysis.input_errors:
        raise InputError("\n".join(analysis.input_errors))
    return EXIT_OK


def _show(state: BaselineState, fmt: str, group: str | None, out: IO[str]) -> None:
    items = sorted((k, e) for k, e in state.entries.items() if group is None or e.group == group)
    if fmt == "json":
        out.write(json.dumps([entry_doc(k, e) for k, e in items], indent=2) + "\n")
        return
    console = Console(file=out, width=None if out.isatty() else 200)
    for name in sorted({e.group for _, e in items}):
        table = Table(title=f"group {name}")
        for column in ("key", "state", "first seen", "last seen", "flows", "bytes"):
            table.add_column(column, overflow="fold")
        for key, e in items:
            if e.group == name:
                table.add_row(key_text(key), e.state, iso(e.first_seen)[:19] + "Z", iso(e.last_seen)[:19] + "Z", f"{e.flows:,}", f"{e.bytes:,}")
        console.print(table)
    if not items:
        console.print("no learned keys" + (f" in group {group}" if group else ""))


def _allow_entry(key: Key) -> dict[str, Any]:
    """One policy allow entry that matches exactly the flows of this key."""
    _, identity, port = key
    entry: dict[str, Any] = {"name": "learned-" + "-".join(x for x in (identity.replace("/", "-"), port.replace("/", "-")) if x)}
    if identity.startswith("as") and "/" in identity and identity[2:].split("/")[0].isdigit():
        number, country = identity[2:].split("/")
        if number != "0":
            entry["asns"] = [int(number)]
        if country != "ZZ":
            entry["countries"] = [country]
    elif any(c.isalpha() for c in identity) and ":" not in identity:
        entry["destinations"] = [identity, f"*.{identity}"]
    else:
        entry["destinations"] = [identity]
    transport, _, number = port.partition("/")
    if transport in ("tcp", "udp") and number:
        entry["ports"] = [f"{transport}/{EPHEMERAL}-65535" if number == "ephemeral" else f"{transport}/{number}"]
    return entry


def allow_entries(state: BaselineState, group: str | None = None) -> str:
    """The learned keys (not the alerted ones) as YAML allow entries, by group, to paste
    under that group's `allow:`. Keys learned per device are listed under their group:
    an allow entry there holds for every device of the group."""
    by_group: dict[str, list[tuple[Key, Entry]]] = {}
    for key, e in sorted(state.entries.items()):
        if e.state == "learned" and (group is None or e.group == group):
            by_group.setdefault(e.group, []).append((key, e))
    lines = ["# egress baseline export: paste each group's entries under its allow:"]
    for name, items in sorted(by_group.items()):
        lines.append(f"# group {name}")
        seen: set[str] = set()
        for key, _ in items:
            text = yaml.safe_dump([_allow_entry(key)], default_flow_style=True, sort_keys=False, width=1000).strip()
            inner = text.removeprefix("[").removesuffix("]")
            if inner not in seen:  # device scopes of one group can share a key
                seen.add(inner)
                lines.append(f"- {inner}")
    return "\n".join(lines) + "\n"
