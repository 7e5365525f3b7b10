"""The errors the engine raises: each names what failed and, where there is one, the fix."""


class HarmonizeError(Exception):
    """Base class; the CLI prints these without a trace and exits non-zero."""


class InputError(HarmonizeError, ValueError):
    """An image or mask that cannot be used: names the file and the problem."""


class MissingDependencyError(HarmonizeError, ImportError):
    """An optional library is not installed: says which extra brings it."""


def install_hint(extra: str) -> str:
    """The command that installs an extra, from the fmm-harmonize folder (the package is on no index)."""
    return f"pip install '.[{extra}]' (in the fmm-harmonize folder)"


def require(module: str, extra: str | None = None, install: str | None = None):
    """Import an optional module or raise MissingDependencyError saying how to install it: the extra that
    brings it, or the given command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = install or (install_hint(extra) if extra else f"pip install {module}")
        raise MissingDependencyError(f"{module} is not installed; install it with: {how}") from exc
