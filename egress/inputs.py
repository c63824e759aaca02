"""What a command reads before anything starts: its capture files checked, its policy chosen.

Apart from `egress.compose` so that `analyze` can load its policy, and start reading its
first file, while the composition root is still being imported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from egress.capture.tshark import tshark_path
from egress.config import DEFAULT_POLICY_PATH, Config
from egress.errors import InputError
from egress.policy.schema import Policy, default_policy, load_policy

__all__ = ["check_inputs", "choose_policy"]

log = structlog.get_logger("egress.compose")


def choose_policy(config: Config, explicit: bool) -> tuple[Policy, Path | None]:
    """The policy, and the file a SIGHUP re-reads (None for the built-in policy). The
    built-in one is used only when nobody named a policy or a config and the default file
    is absent: `check`, `analyze` and the services decide alike."""
    if not explicit and config.policy_file == DEFAULT_POLICY_PATH and not DEFAULT_POLICY_PATH.exists():
        log.warning("policy_default", reason=f"{DEFAULT_POLICY_PATH} not found; every egress is unexpected under the built-in policy")
        return default_policy(), None
    policy = load_policy(config.policy_file)
    for warning in policy.warnings:
        log.warning("policy_warning", message=warning)
    return policy, config.policy_file


def check_inputs(files: Sequence[Path]) -> None:
    """tshark is there and every capture file exists, before anything starts."""
    tshark_path()
    for path in files:
        if not path.exists():
            raise InputError(f"{path}: no such file")
