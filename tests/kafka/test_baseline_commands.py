"""`egress baseline show|export|approve|forget --config F` act on the Kafka topic a rules
consumer learned into, as they act on a baseline file; a running consumer takes what an
analyst approved or forgot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.baseline.test_baseline_samples import GROUP, KEYS, LEARN_ENFORCE, POLICY, SPLIT, _split, _write_policy
from tests.conftest import run_egress, wait_for
from tests.kafka.test_baseline_group import _gauge
from tests.kafka.test_streaming import Rules, rules_procs, topics_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.kafka


def _on_topic(cfg: Path, verb: str, *args: str) -> str:
    proc = run_egress("baseline", verb, *args, "--config", cfg, env={})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _keys(cfg: Path) -> dict[tuple[str, str, str], str]:
    return {(e["scope"], e["identity"], e["port"]): e["state"] for e in json.loads(_on_topic(cfg, "show", "--format", "json"))}


def test_baseline_commands_on_the_topic(kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    policy = _write_policy(tmp_path / "policy.yaml", POLICY)
    geo = ("--policy", policy, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    env = topics_env(kafka_bootstrap)
    env["EGRESS_KAFKA__BASELINE_TOPIC"] = env["EGRESS_KAFKA__FLOWS_TOPIC"].replace(".flows", ".baseline")
    cfg = tmp_path / "egress.yaml"
    cfg.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": [kafka_bootstrap], "baseline_topic": env["EGRESS_KAFKA__BASELINE_TOPIC"]}}))
    single = tmp_path / "single.json"  # the same input through one `egress run`, its baseline in a file
    assert run_egress("run", "--read", LEARN_ENFORCE, *geo, "--baseline", single, env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"}).returncode == 0

    member = Rules(env, tmp_path / "a.ndjson", *geo)
    rules_procs.append(member)
    member.wait_assigned()
    # the learning part first, then the enforcing part: across partitions a later flow may be
    # read before an earlier one, and learning is judged in flow time
    learn, enforce = _split(LEARN_ENFORCE, SPLIT, tmp_path / "learn.pcap", tmp_path / "enforce.pcap")
    learned = sum(state == "learned" for state, _ in KEYS.values())
    alerted = sum(state == "alerted" for state, _ in KEYS.values())
    for part, state, count in ((learn, "learned", learned), (enforce, "alerted", alerted)):
        agent = run_egress("agent", "--read", part, *geo, env=env)
        assert agent.returncode == 0, agent.stderr
        assert wait_for(lambda: _gauge(member, "egress_baseline_keys", group=GROUP, state=state) == count, 60), (state, member.log.read_text()[-2000:])  # noqa: B023

    # show and export read the topic whole: what the consumer learned is what the file run learned
    assert _keys(cfg) == {k: state for k, (state, _) in KEYS.items()}
    exported = _on_topic(cfg, "export")
    assert exported == run_egress("baseline", "export", "--baseline", single).stdout
    assert {e["name"] for e in yaml.safe_load(exported)} == {"learned-eyecloud.co.uk-tcp-443", "learned-as3320-DE-udp-ephemeral"}

    # approve and forget write to the topic; the running consumer merges them
    assert "approved 1 key in Kafka topic" in _on_topic(cfg, "approve", f"{GROUP}:example.net:tcp/443")
    assert "forgot 1 key in Kafka topic" in _on_topic(cfg, "forget", f"{GROUP}:b.s3.amazonaws.com:tcp/443")
    after = _keys(cfg)
    assert after[(GROUP, "example.net", "tcp/443")] == "learned"
    assert (GROUP, "b.s3.amazonaws.com", "tcp/443") not in after
    assert "learned-example.net-tcp-443" in _on_topic(cfg, "export")
    learned = sum(state == "learned" for state, _ in KEYS.values()) + 1
    assert wait_for(lambda: _gauge(member, "egress_baseline_keys", group=GROUP, state="learned") == learned, 30)
    assert wait_for(lambda: _gauge(member, "egress_baseline_keys", group=GROUP, state="alerted") == alerted - 2, 30)

    missing = run_egress("baseline", "forget", f"{GROUP}:nowhere.example:tcp/1", "--config", cfg, env={})
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith(f"Kafka topic {env['EGRESS_KAFKA__BASELINE_TOPIC']}: no such key: {GROUP}:nowhere.example:tcp/1 (see egress baseline show)")
    assert member.stop() == 0

    # the stopped consumer wrote the counts its flows moved since the key's first record
    # (written with the counts of the batch that learned or alerted it): the file run's
    def counts(doc: str) -> dict[tuple[str, str, str], tuple[int, int, float, float]]:
        return {(e["scope"], e["identity"], e["port"]): (e["flows"], e["bytes"], e["first_seen"], e["last_seen"]) for e in json.loads(doc)}

    on_topic = counts(_on_topic(cfg, "show", "--format", "json"))
    in_file = counts(run_egress("baseline", "show", "--format", "json", "--baseline", single).stdout)
    assert on_topic == {k: v for k, v in in_file.items() if k != (GROUP, "b.s3.amazonaws.com", "tcp/443")}
    assert {k: v[0] for k, v in on_topic.items()} == {k: flows for k, (_, flows) in KEYS.items() if k[1] != "b.s3.amazonaws.com"}
