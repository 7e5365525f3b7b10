"""`harmonize serve` (the engine kept loaded for the GIMP plug-in) and `harmonize gimp` (install the
plug-in)."""
from __future__ import annotations

import argparse

from . import add_backend, add_model, add_verb


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import serve, serve_stdio

    if args.stdio:
        serve_stdio(args.backend, args.model)
    else:
        serve(args.backend, args.model, args.socket)
    return 0


def cmd_gimp(args: argparse.Namespace) -> int:
    from ..gimp_install import main as gimp_main

    action = "check" if args.check else "uninstall" if args.uninstall else args.action
    return gimp_main(action, args.gimp_dir, args.address)


def register(sub) -> None:
    s = add_verb(sub, "serve", cmd_serve, "keep the model loaded for the GIMP plug-in (local socket)")
    s.add_argument("--socket", help="Unix socket path (default: $XDG_RUNTIME_DIR/fmm-harmonize/engine.sock)")
    add_backend(s)
    add_model(s)
    s.add_argument("--stdio", action="store_true", help="answer one request from stdin on stdout")

    g = add_verb(sub, "gimp", cmd_gimp, "install the GIMP 3 plug-in Filters > Harmonize Layer")
    g.add_argument("action", nargs="?", default="install", choices=["install", "check", "uninstall"])
    g.add_argument("--check", action="store_true", help="say what is missing, exit 1 if anything is")
    g.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    g.add_argument("--gimp-dir", help="GIMP 3 configuration folder (default: found for this platform)")
    g.add_argument("--address", help="engine socket path the plug-in should use (default: its own)")
