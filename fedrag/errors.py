"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class FedragError(Exception):
    """An error the user can fix (bad path, malformed data, unknown model, ...)."""


class DataError(FedragError):
    """Malformed or missing input data."""


class ModelResolutionError(FedragError):
    """A model name/path could not be resolved to loadable weights."""


class DivergedError(FedragError):
    """Training became non-finite; rerunning the same command would diverge again."""

    resumable = False


class StoreError(FedragError):
    """A knowledge store is missing, empty, or incompatible with the encoder."""


class EngineError(FedragError):
    """The federation engine (Ray, Flower) failed for a reason outside the run's settings,
    such as an overloaded machine; the CLI exits with code 1, and the same command resumes."""

    exit_code = 1


def check_finite(obj, what: str = "") -> None:
    """Refuse a dataclass whose float fields hold NaN or infinity.

    `nan > 0` and `nan < 0` are both false, so a range check alone lets NaN through
    (a `--dp-noise nan` would switch DP off while the report still named it). Every
    settings dataclass calls this first in `__post_init__`.

    Args:
        obj: a dataclass instance.
        what: how the error names the fields' owner (default: option names `--field`).

    Raises:
        FedragError: naming the first non-finite field.
    """
    import dataclasses
    import math

    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            name = f"{what}{f.name}" if what else "--" + f.name.replace("_", "-")
            raise FedragError(f"{name} must be a finite number, got {value}")
