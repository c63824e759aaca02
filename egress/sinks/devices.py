"""`egress analyze --format devices|devices-csv|devices-json`: the device inventory.

One row per device (by MAC) that sent a frame, egress or not (`egress.inventory`): brand
and IEEE registry name, inventory name, group, covered, IPs, VLANs, first and last seen
(UTC), what revealed it, and its egress: flows it opened to non-local addresses and the
packets and bytes it sent in them. JSON is one device record per line, as on the devices
topic (`codec.device_to_ecs`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO


from egress.codec import device_to_ecs, encode
from egress.model import DeviceRecord
from egress.sinks.grouped import utc_seconds

__all__ = ["DEVICE_COLUMNS", "write_devices"]

DEVICE_COLUMNS = (
    "mac", "vendor", "organization", "name", "group", "covered", "ips", "vlans", "first_seen", "last_seen",
    "seen_by", "flows_out", "packets_out", "bytes_out",
)  # fmt: skip


def _row(d: DeviceRecord) -> tuple[str, ...]:
    return (
        d.mac, d.manufacturer or "", d.organization or "", d.name, d.group, "yes" if d.covered else "no", " ".join(d.ips),
        " ".join(map(str, d.vlans)), utc_seconds(d.first_seen), utc_seconds(d.last_seen), " ".join(d.seen_by),
        str(d.flows_out), str(d.packets_out), str(d.bytes_out),
    )  # fmt: skip


def write_devices(fmt: str, out: IO[str], devices: Sequence[DeviceRecord]) -> None:
    """`fmt`: devices (a table), devices-csv or devices-json."""
    if fmt == "devices-json":
        for device in devices:
            out.write(encode(device_to_ecs(device)).decode("utf-8") + "\n")
    elif fmt == "devices-csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(DEVICE_COLUMNS)
        writer.writerows(map(_row, devices))
    else:
        from rich.console import Console  # here: ~30 ms of imports that the other formats do not need
        from rich.table import Table

        console = Console(file=out, width=None if out.isatty() else 10_000)  # piped: as wide as the rows need
        covered = sum(d.covered for d in devices)
        table = Table(title=f"Devices: {len(devices)} ({covered} of covered vendors, {sum(d.flows_out == 0 for d in devices)} without egress)")
        for column in DEVICE_COLUMNS:
            table.add_column(column.replace("_", " "), overflow="fold", justify="right" if column.endswith("_out") else "left")
        for device in devices:
            row = _row(device)
            style = "bold red" if device.covered else None
            table.add_row(*row[:-3], *(f"{int(v):,}" for v in row[-3:]), style=style)
        console.print(table)
