"""A site's own policy: which models a federated run may load on this site.

The server's run config names the retriever and generator; without a policy, anyone
who can submit a run to the SuperLink could name a private model directory on a
site's disk and receive its weights back in the replies. A site therefore loads only
what its operator listed, in the SuperNode's node config::

    flower-supernode ... --node-config 'corpus="..." train="..." allow-models="minilm,smollm2-135m,/srv/models"'

`allow-models` is a comma-separated list of bundled names, directories (a directory
also allows everything beneath it) or `*` (any model: only for trusted runs). The
default is the bundled models only. An adapter directory's base model must be allowed
too. Simulation runs every site in the user's own process and is trusted by default; so
are the nodes of Flower's own simulation (`flwr run` with a node config holding
`partition-id` and no `allow-models`).

A site also refuses a round from a server that runs another fedrag version (the server
names its own in every round's configuration, `fedrag-version`): the two sides exchange
tensors by name and layout, which only one version is sure to agree on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedrag.errors import FedragError
from fedrag.federation.wire.messages import VERSION_KEY
from fedrag.models import BUNDLED_GENERATORS, BUNDLED_RETRIEVERS, adapter_base

DEFAULT_MODELS = (*BUNDLED_RETRIEVERS, *BUNDLED_GENERATORS)
DEFAULT_STRATEGY_MODULES = ("fedrag",)
NODE_CONFIG_KEY = "allow-models"
STRATEGY_KEY = "allow-strategies"


def _listed(value) -> tuple[str, ...]:
    return tuple(m.strip() for m in str(value).split(",") if m.strip())


@dataclass(frozen=True)
class SitePolicy:
    """`models`: what the site loads; `strategy_modules`: the packages whose
    `module:attribute` strategies the site imports (naming an import path is not a
    way to run arbitrary code on a site; fedrag's own by default)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    strategy_modules: tuple[str, ...] = DEFAULT_STRATEGY_MODULES

    @classmethod
    def from_node_config(cls, node_config) -> "SitePolicy":
        cfg = node_config if node_config is not None else {}
        models = _listed(cfg[NODE_CONFIG_KEY]) if NODE_CONFIG_KEY in cfg else DEFAULT_MODELS
        modules = DEFAULT_STRATEGY_MODULES + (_listed(cfg[STRATEGY_KEY]) if STRATEGY_KEY in cfg else ())
        return cls(models, modules)

    def allows_strategy(self, path: str) -> bool:
        if ":" not in path or "*" in self.strategy_modules:
            return True  # a built-in name
        module = path.partition(":")[0]
        return any(module == m or module.startswith(m + ".") for m in self.strategy_modules)

    def allows(self, model: str) -> bool:
        if model in ("", "none") or "*" in self.models or model in self.models:
            return True
        path = Path(model).expanduser()
        if not path.exists():
            return False
        path = path.resolve()
        roots = [Path(m).expanduser().resolve() for m in self.models if m not in DEFAULT_MODELS]
        if not any(path == r or path.is_relative_to(r) for r in roots):
            return False
        base = adapter_base(path) if path.is_dir() else None
        return base is None or self.allows(base)

    def check_strategy(self, path: str) -> None:
        if not self.allows_strategy(path):
            raise FedragError(
                f"site policy: this site does not import strategy '{path}' (allowed packages: "
                f"{', '.join(self.strategy_modules)}; the site operator sets --node-config '{STRATEGY_KEY}=\"...\"')"
            )

    def check(self, **models: str) -> None:
        """Raise if a named model (`retriever=...`, `generator=...`) is not allowed."""
        for role, model in models.items():
            if not self.allows(model):
                raise FedragError(
                    f"site policy: this site does not load {role} '{model}' (allowed: "
                    f"{', '.join(self.models)}; the site operator sets --node-config '{NODE_CONFIG_KEY}=\"...\"')"
                )


TRUSTED = SitePolicy(("*",), ("*",))
"""A policy that loads any model and imports any strategy: for runs whose every site is your own."""


def app_policy(context) -> SitePolicy:
    """The shipped app's policy: a SuperNode's node config (`allow-models`, `allow-strategies`),
    except for a node of Flower's own simulation (`flwr run` with a simulation connection:
    its node config is only `partition-id` and `num-partitions`), which is the user's own
    process and, as `fedrag federate`'s simulation, loads what the run names."""
    cfg = context.node_config if context.node_config is not None else {}
    if "partition-id" in cfg and NODE_CONFIG_KEY not in cfg and STRATEGY_KEY not in cfg:
        return TRUSTED
    return SitePolicy.from_node_config(cfg)


def check_version(config) -> None:
    """Refuse, in one line naming both versions, a round (its `config` record) whose server
    runs another fedrag version than this site."""
    from fedrag import __version__

    server = config.get(VERSION_KEY) if config is not None else None
    if server != __version__:
        said = f"fedrag {server}" if server else "an older fedrag (it names no version)"
        raise FedragError(
            f"site refuses the run: this site runs fedrag {__version__}, the server {said}; "
            "install the same fedrag version on the server and every site"
        )


def version_mod(msg, context, call_next):
    """A ClientApp mod, before any other: a round from a server with another fedrag version is
    refused before anything runs (secure aggregation's set-up messages carry no round
    configuration; its training message does)."""
    config = msg.content.config_records.get("config")
    if config is not None:
        check_version(config)
    return call_next(msg, context)
