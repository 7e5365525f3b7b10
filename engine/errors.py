"""The errors the engine raises: each names what failed and, where there is one, the fix."""


class HarmonizeError(Exception):
    """Base class; the CLI prints these without a trace and exits non-zero."""


class InputError(HarmonizeError, ValueError):
    """An image or mask that cannot be used: names the file and the problem."""


class MissingDependencyError(HarmonizeError, ImportError):
    """An optional library is not installed: says which extra brings it."""


def require(module: str, extra: str):
    """Import an optional module or raise MissingDependencyError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'fmm-harmonize[{extra}]'"
        ) from exc
