"""The `harmonize` command: a thin parser over the verbs of engine/commands/ (each verb's --help names
its file), and `main`, which turns the project's errors into one line and exit status 2."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .commands import LATER, bench, choose, deploy, doctor, evaluate, run, serve, train, validate
from .errors import HarmonizeError

VERB_MODULES = (run, train, evaluate, choose, deploy, validate, bench, serve, doctor)  # the order of `harmonize --help`


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line: global options, then each verb module's parsers; of the options added later
    (commands.add_options_later), those of `verb` only, or all when no verb is named."""
    p = argparse.ArgumentParser(prog="harmonize", description="FMM image harmonization.")
    p.add_argument("--version", action="version", version=f"fmm-harmonize {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True)
    LATER.clear()
    for module in VERB_MODULES:
        module.register(sub)
    for name, (parser, add) in LATER.items():
        if verb in (None, name):
            add(parser)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; an option the verb does not know is refused with that verb's usage, not the
    top-level one."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.verb_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # This package's messages at INFO; other libraries' (botocore says where it found credentials) only
    # when they warn, unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("engine").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except HarmonizeError as exc:
        print(f"harmonize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harmonize: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
