"""The `egress` command (console script and `python -m egress`).

`analyze` reads files through a tshark that spends ~0.16 s loading its dissectors before
it reads a packet; egress's own imports (pydantic, structlog, the pipeline) take about as
long. Started here, before them, the two overlap (on a 100,000-packet capture tshark's
start-up is half of the run, when it follows them). The early tshark waits on its stdin
for the first capture, and ends with egress (its stdin closes) if none asks for it."""

import sys


def main() -> int:
    if sys.argv[1:2] == ["analyze"] and not {"-h", "--help"} & set(sys.argv):
        from egress.capture.tshark import start_early

        start_early()
    from egress.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
