"""Fault tests reuse the Kafka fixtures, and have the three-broker cluster's."""

from tests.faults.cluster import kafka_cluster  # noqa: F401
from tests.kafka.conftest import kafka_bootstrap  # noqa: F401
from tests.kafka.test_streaming import rules_procs  # noqa: F401
