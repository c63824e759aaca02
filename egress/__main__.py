"""The `egress` command (console script and `python -m egress`). For `analyze`, the package
itself has started tshark already (see egress/__init__.py)."""

import sys


def main() -> int:
    from egress.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
