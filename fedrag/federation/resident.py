"""Deprecated: the resident worker moved to `fedrag.federation.site.resident_worker` (issue #40):
`python -m fedrag.federation.site.resident_worker SOCKET`. This path still serves (systemd
units written for it keep working), with a DeprecationWarning; it will be removed."""

import warnings

from fedrag._lazy import moved_module

if __name__ == "__main__":
    warnings.warn(
        "python -m fedrag.federation.resident is deprecated: run python -m fedrag.federation.site.resident_worker",
        DeprecationWarning,
        stacklevel=1,
    )
    from fedrag.federation.site.resident_worker import main

    main()
else:
    moved_module(__name__, "fedrag.federation.site.resident_worker")
