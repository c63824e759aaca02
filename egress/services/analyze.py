"""`egress analyze`: capture files → flows → enrich → policy → report, in one process.

Every flow record is encoded and decoded with the wire codec before the policy sees
it, exactly as it would cross Kafka, so offline verdicts equal the streaming ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from egress.capture.file import FileSource
from egress.codec import decode_flow, encode, flow_to_ecs
from egress.config import Config
from egress.enrich import EnricherChain
from egress.errors import EgressError, InputError
from egress.flows.meter import FlowMeter
from egress.localnet import LocalNetworks
from egress.model import FlowRecord
from egress.policy.evaluate import Evaluator
from egress.sinks.report import Report

__all__ = ["Analysis", "analyze_files"]

log = structlog.get_logger("egress.analyze")


@dataclass(slots=True)
class Analysis:
    """What a run came to; `input_errors` are files that could not be read (exit 2)."""

    packets: int = 0
    flows: int = 0
    alerts: int = 0
    warnings: list[str] = field(default_factory=list)
    input_errors: list[str] = field(default_factory=list)


def analyze_files(
    files: Sequence[Path],
    config: Config,
    evaluator: Evaluator,
    chain: EnricherChain,
    report: Report,
    *,
    flows_out: IO[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Analysis:
    local = LocalNetworks(evaluator.policy.local_networks)
    result = Analysis()

    def handle(rec: FlowRecord) -> None:
        wire = decode_flow(encode(flow_to_ecs(rec)))
        verdict = evaluator.evaluate(wire)
        report.flow(wire)
        if flows_out is not None:
            flows_out.write(encode(flow_to_ecs(wire)) + b"\n")
        for alert in verdict.alerts:
            report.alert(alert)
        result.flows += 1
        result.alerts += len(verdict.alerts)

    for path in files:
        source = FileSource.for_networks(path, list(local.networks), config.capture.bpf, chunk_packets=config.capture.chunk_packets, progress=progress)
        meter = FlowMeter.from_config(config, local, chain)
        try:
            for pkt in source.packets():
                for rec in meter.add(pkt):
                    handle(rec)
        except InputError as exc:
            result.packets += source.report.packets
            result.input_errors.append(str(exc))
            log.error("capture_unreadable", file=str(path), reason=str(exc))
            continue
        except EgressError:
            raise
        finally:
            for rec in meter.flush():
                handle(rec)
        result.packets += source.report.packets
        for warning in source.report.warnings:
            result.warnings.append(warning)
            log.warning("capture_warning", file=str(path), message=warning)
        log.info("capture_done", file=str(path), packets=source.report.packets, flows=meter.flows_exported, prefiltered=source.report.prefiltered)
    return result
