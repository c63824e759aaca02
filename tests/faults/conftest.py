"""Fault tests reuse the Kafka fixtures."""

from tests.kafka.conftest import kafka_bootstrap  # noqa: F401
from tests.kafka.test_streaming import rules_procs  # noqa: F401
