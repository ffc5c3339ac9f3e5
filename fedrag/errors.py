"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class FedragError(Exception):
    """An error the user can fix (bad path, malformed data, unknown model, ...)."""


class DataError(FedragError):
    """Malformed or missing input data."""


class ModelResolutionError(FedragError):
    """A model name/path could not be resolved to loadable weights."""


class StoreError(FedragError):
    """A knowledge store is missing, empty, or incompatible with the encoder."""
