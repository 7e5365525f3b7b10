"""`harmonize serve` (the engine kept loaded for the GIMP plug-in) and `harmonize gimp` (install the
plug-in)."""
from __future__ import annotations

import argparse

from . import add_backend, add_model, add_verb


def cmd_serve(args: argparse.Namespace) -> int:
    from plugin import rendezvous

    from ..errors import InputError
    from ..gimp.install import installed_key
    from ..gimp.server import serve

    if args.flatpak:
        address = rendezvous.flatpak_socket()
    elif args.port is not None:
        address = ("127.0.0.1", args.port)
    else:
        address = args.socket or rendezvous.default_address()
    key_file = None
    if isinstance(address, tuple):
        key_file = args.key_file or installed_key()
        if key_file is None:
            raise InputError("a server on TCP needs the plug-in's key: run 'harmonize gimp install' first, or give "
                             "--key-file")
        try:
            rendezvous.read_key(key_file)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the key {key_file}: {exc}") from None
    serve(args.backend, args.model, address, key_file=key_file, idle_minutes=args.idle_minutes)
    return 0


def cmd_gimp(args: argparse.Namespace) -> int:
    from ..gimp.install import main as gimp_main

    action = gimp_action(args)
    if action is None:  # installing is never what a bare `harmonize gimp` does
        args.verb_parser.print_help()
        return 2
    return gimp_main(action, args.gimp_dir, args.address, args.all_profiles, args.create, args.new_key)


def gimp_action(args: argparse.Namespace) -> str | None:
    """The one action `harmonize gimp` was asked for (the word or its flag), or None; contradictory
    options end it with a usage error (exit 2)."""
    named = {args.action, "check" if args.check else None, "uninstall" if args.uninstall else None} - {None}
    error = args.verb_parser.error
    if len(named) > 1:
        error(f"asked to {' and to '.join(sorted(named))} at once: give one of install, check (--check) and "
              "uninstall (--uninstall)")
    action = next(iter(named), None)
    for flag, value in (("--address", args.address), ("--create", args.create), ("--new-key", args.new_key)):
        if value and action != "install":
            error(f"{flag} is for install only")
    if args.create and not args.gimp_dir:
        error("--create makes the folder --gimp-dir names: give --gimp-dir")
    if args.gimp_dir and args.all_profiles:
        error("--gimp-dir names one profile and --all-profiles asks for every one: give one or the other")
    return action


def minutes(text: str) -> float:
    """argparse type: minutes, 0 or more."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not 0 or more")
    return value


def register(sub) -> None:
    s = add_verb(sub, "serve", cmd_serve, "keep the model loaded for the GIMP plug-in (local socket)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--socket", help="Unix socket path (default: $XDG_RUNTIME_DIR/fmm-harmonize/engine.sock)")
    where.add_argument("--flatpak", action="store_true",
                       help="listen where a Flatpak GIMP finds it (~/.var/app/org.gimp.GIMP/cache/fmm-harmonize/)")
    where.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (the default where Unix sockets are missing)")
    s.add_argument("--key-file",
                   help="with TCP: the key clients must prove (default: the installed plug-in's engine.key)")
    s.add_argument("--idle-minutes", type=minutes, default=0.0,
                   help="exit after this many minutes without a request (default 0: never; the plug-in starts "
                        "its server with 10)")
    add_backend(s, device=False)  # the plug-in names the device of each request
    add_model(s)

    g = add_verb(sub, "gimp", cmd_gimp, "install the GIMP 3 plug-in Filters > Harmonize Layer, check it or remove it")
    g.add_argument("action", nargs="?", choices=["install", "check", "uninstall"],
                   help="install: into the newest GIMP 3 profile of each packaging found; check: the same as "
                        "--check; uninstall: the same as --uninstall. Give one (alone, this prints this help)")
    g.add_argument("--check", action="store_true", help="name every GIMP 3 profile and whether the plug-in in it "
                   "is current; exit 1 if the newest lacks it")
    g.add_argument("--uninstall", action="store_true", help="remove the plug-in from every profile")
    g.add_argument("--all-profiles", action="store_true",
                   help="also install into (or check) older GIMP 3 profiles (default: the newest of each packaging)")
    g.add_argument("--gimp-dir", help="one GIMP 3 profile folder, which must exist (default: those found for this "
                   "platform; Snap GIMP is not supported yet)")
    g.add_argument("--create", action="store_true", help="with install: make the --gimp-dir folder when it does "
                   "not exist (GIMP reads it only if it is its profile)")
    g.add_argument("--address", help="with install: engine socket path the plug-in should use (default: its own)")
    g.add_argument("--new-key", action="store_true", help="with install: make a new engine key (by default a reinstall "
                   "keeps the one installed, which a running engine knows)")
