"""``python -m backchannel``: the same command line as ``backchannel``."""

from backchannel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
