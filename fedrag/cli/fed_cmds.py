"""`fedrag federate`: one strategy or stage across N sites, simulated or deployed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal, Optional

import typer

from click.core import ParameterSource

from fedrag.cli.options import app, choice_option, collect, settings, with_settings
from fedrag.cli.train_cmds import OUT, OVERWRITE, STAGE, STRATEGY, given
from fedrag.errors import FedragError
from fedrag.federation.task import FedTask
from fedrag.train import TrainConfig

Engine = Literal["simulation", "deployment"]


def _site_paths(
    corpus: str, train: str, sites: int, partition_mode: str, seed: int, site_dirs: list[str] | None, out: Path
) -> list[dict[str, str]]:
    from fedrag.data import check_gold_ids, load_corpus, load_qa
    from fedrag.data.partition import partition, write_sites

    if site_dirs:
        paths = []
        for d in site_dirs:
            p = {"corpus": str(Path(d) / "corpus.jsonl"), "train": str(Path(d) / "train.jsonl")}
            check_gold_ids(load_qa(p["train"]), load_corpus(p["corpus"]), p["train"])
            paths.append(p)
        return paths
    passages, examples = load_corpus(corpus), load_qa(train)
    check_gold_ids(examples, passages, train)
    return write_sites(partition(passages, examples, sites, partition_mode, seed), out / "sites")


def _print_summary(cost: dict) -> None:
    typer.echo(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in cost.items() if k != "task"}))


# also quickstart's: a Ray actor serves sites in turn and loads the models once, so the
# machine's CPU count (one actor for every site) saves a second copy where cores are few
CPUS_PER_SITE = typer.Option(
    1.0,
    "--cpus-per-site",
    help="simulation: CPU cores per site (Ray starts cores / this actors, each serving sites in turn)",
    rich_help_panel="Engine",
)


@app.command()
@with_settings(settings(FedTask))  # every CLI-facing task setting, in the --help panel its field names
def federate(
    ctx: typer.Context,
    strategy: Optional[str] = STRATEGY,  # by import path: a site imports it when its policy lists the package (allow-strategies)
    stage: Optional[str] = STAGE,
    corpus: Optional[str] = typer.Option(None, "--corpus", help="corpus JSONL, partitioned across --sites"),
    train: Optional[str] = typer.Option(None, "--train", help="training QA JSONL, partitioned across --sites"),
    site: Optional[list[str]] = typer.Option(
        None, "--site", help="a site's own directory with corpus.jsonl + train.jsonl (repeat per site)"
    ),
    sites: int = typer.Option(2, "--sites", min=1, help="sites to partition --corpus/--train across"),
    eval_qa: Optional[str] = typer.Option(
        None, "--val", help="validation QA JSONL the server evaluates on each round", rich_help_panel="Evaluation and tracking"
    ),
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    engine: str = choice_option(
        "simulation",
        "--engine",
        Engine,
        "simulation (Ray, one machine) or deployment (a SuperLink + one SuperNode per site on 127.0.0.1)",
        panel="Engine",
    ),
    cpus_per_site: float = CPUS_PER_SITE,
    gpus_per_site: float = typer.Option(
        0.0, "--gpus-per-site", help="simulation: GPU fraction per site (0.5: two sites share one)", rich_help_panel="Engine"
    ),
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        help="simulation: HOST:PORT of a running Ray cluster's head to run the sites on (default: a local Ray)",
        rich_help_panel="Engine",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="show Flower's own log lines", rich_help_panel="Engine"),
    tls: bool = typer.Option(
        False,
        "--tls/--insecure",
        help="deployment: TLS between SuperLink and SuperNodes (certificates made in OUT/credentials)",
        rich_help_panel="Engine",
    ),
    supernode_auth: bool = typer.Option(
        False,
        "--supernode-auth",
        help="deployment: only SuperNodes with registered keys may join (needs --tls)",
        rich_help_panel="Engine",
    ),
    superlink: Optional[str] = typer.Option(
        None,
        "--superlink",
        help="HOST:PORT of a running SuperLink whose sites are connected: submit the run there (--out is a path on its host)",
        rich_help_panel="Engine",
    ),
    root_certificates: Optional[Path] = typer.Option(
        None, "--root-certificates", help="with --superlink: the CA certificate of its TLS", rich_help_panel="Engine"
    ),
    **kw,
):
    """Federated fine-tuning; writes DIR/retriever, DIR/generator, DIR/rounds.json, DIR/cost.json.
    An interrupted run resumes from its last round when the same command runs again."""
    _check_sources(corpus, train, site, superlink, ray_address, engine, out)
    n_sites = len(site) if site else sites
    task = _task(ctx, kw, strategy, stage, out, corpus, eval_qa, n_sites)
    phases = len(task.plan().phases)  # validates the strategy/stage names before anything starts
    if superlink:  # the sites and the server's outputs are elsewhere: only the submission happens here
        _print_summary(_submit(task, superlink, root_certificates))
        return
    _prepare_out(out, task, phases, overwrite)
    paths = _site_paths(corpus, train, n_sites, task.run.partition, task.training.seed, site, out)
    try:
        cost = _run(task, paths, engine, out, cpus_per_site, gpus_per_site, verbose, tls, supernode_auth, ray_address)
    except BaseException as exc:  # an interrupt keeps the finished rounds' checkpoint: say so, not "removed"
        if not isinstance(exc, Exception) and (out / "checkpoint").exists():
            exc.add_note(f"the finished rounds are checkpointed in {out}: run the same command again to resume")
        raise
    _print_summary(cost)


def _check_sources(corpus, train, site, superlink, ray_address, engine: str, out: Path) -> None:
    """`federate`'s data and engine options: where the sites' data comes from, and what goes with what."""
    if not superlink and not site and not (corpus and train):
        raise FedragError(
            "give --corpus and --train (partitioned across --sites), one --site DIR per site, "
            "or --superlink HOST:PORT of a running federation"
        )
    if ray_address and (engine != "simulation" or superlink):
        raise FedragError("--ray-address applies to --engine simulation")
    if superlink and not out.is_absolute():
        raise FedragError("with --superlink, --out is a path on the SuperLink's host: give it absolute")


def _task(ctx: typer.Context, kw: dict, strategy, stage, out: Path, corpus, eval_qa, n_sites: int) -> FedTask:
    """The task the command's options describe (--min-sites: every site it starts, unless given)."""
    min_sites = kw["min_sites"] if ctx.get_parameter_source("min_sites") is not ParameterSource.DEFAULT else n_sites
    return collect(
        FedTask,
        kw,
        strategy=strategy or "",
        stage=stage or "",
        min_sites=min_sites,
        out=str(out.resolve()),
        eval_corpus=str(Path(corpus).resolve()) if (eval_qa and corpus) else "",
        eval_qa=str(Path(eval_qa).resolve()) if eval_qa else "",
        explicit=",".join(given(ctx, TrainConfig)),
    )


def _submit(task: FedTask, superlink: str, root_certificates: Path | None) -> dict:
    """The run submitted to a running SuperLink whose sites are connected; its summary."""
    from fedrag.federation.launch.deployment import submit_remote

    if not root_certificates:
        typer.echo(f"fedrag: warning: submitting to {superlink} without TLS (pass --root-certificates)", err=True)
    return submit_remote(task, superlink, str(root_certificates) if root_certificates else None)


def _prepare_out(out: Path, task: FedTask, phases: int, overwrite: bool) -> None:
    """OUT for this run: a checkpoint of the same task resumes (said on stderr), else a new
    or overwritten directory, marked as a federated run's."""
    import shutil

    from fedrag._io import MARKER, atomic_write_json, check_out, output_kind

    if out.exists() and output_kind(out) == "federate" and not overwrite:
        from fedrag.federation.server.round_checkpoint import read_checkpoint

        resume = read_checkpoint(out, task, phases)  # refuses another task's or a finished run's checkpoint
        if resume is not None:
            typer.echo(
                f"fedrag: resuming {out}: phase {resume['phase'] + 1}/{phases}, "
                f"{resume['rounds_done']} of {task.training.rounds} rounds done",
                err=True,
            )
    else:
        check_out(out, "federate", overwrite)
        if overwrite and out.exists():
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, {"kind": "federate"})


def _run(
    task: FedTask,
    paths,
    engine: str,
    out: Path,
    cpus_per_site: float,
    gpus_per_site: float,
    verbose: bool,
    tls: bool,
    supernode_auth: bool,
    ray_address: str | None = None,
) -> dict:
    if engine == "simulation":
        from fedrag.federation.launch.simulation import simulate

        return simulate(
            task, paths, cpus_per_site=cpus_per_site, gpus_per_site=gpus_per_site, verbose=verbose, ray_address=ray_address
        )
    else:
        from fedrag.federation.launch.deployment import deploy

        if supernode_auth and not tls:
            raise FedragError("--supernode-auth needs --tls")
        certs = keys = None
        if tls:
            from fedrag.federation.launch.credentials import make_supernode_keys, make_tls

            certs = make_tls(out / "credentials")
            keys = make_supernode_keys(out / "credentials", len(paths)) if supernode_auth else None
        else:
            typer.echo(
                "fedrag: warning: INSECURE deployment (no TLS, no SuperNode authentication); on a network, anyone who "
                "reaches the SuperLink port can submit runs or join as a site. Pass --tls --supernode-auth.",
                err=True,
            )
        return deploy(task, paths, tempfile.mkdtemp(prefix="fedrag-deploy-", dir=out), certs=certs, auth_keys=keys)


@app.command("app")
def app_cmd(
    out: Path = typer.Option(..., "--out", help="directory for the app's pyproject.toml"),
    strategy: str = typer.Option("ra-dit", "--strategy", help="the strategy the app config names by default"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing pyproject.toml"),
):
    """Write the Flower app (pyproject.toml with every FedTask setting) that `flwr run DIR` deploys:
    the ServerApp and ClientApp come from the installed fedrag, so no source checkout is needed."""
    from fedrag.federation.launch.app_pyproject import write_app

    if out.exists() and not out.is_dir():
        raise FedragError(f"{out} exists and is not a directory; choose another --out")
    if (out / "pyproject.toml").exists() and not overwrite:
        raise FedragError(f"{out / 'pyproject.toml'} exists; pass --overwrite to replace it")
    FedTask(strategy=strategy).plan()  # a strategy fedrag knows, or an importable "module:attribute"
    typer.echo(
        f"Flower app -> {write_app(out, strategy)}\n"
        f"Flower's local simulation: flwr run {out} --stream --run-config 'corpus=\"/abs/corpus.jsonl\" "
        f'train="/abs/train.jsonl" out="/abs/run"\'\n'
        f"A deployed SuperLink: flwr run {out} CONNECTION --stream (each SuperNode names its data with "
        f"--node-config; docs/deployment.md)"
    )


@app.command()
def credentials(
    out: Path = typer.Option(..., "--out", help="directory for the certificates and keys"),
    host: list[str] = typer.Option(
        ..., "--host", help="an address the sites reach the SuperLink at (IP or DNS name; repeat for several)"
    ),
    sites: int = typer.Option(..., "--sites", min=1, help="SuperNode key pairs to make (site0_key ...)"),
    days: int = typer.Option(365, "--days", min=1, help="days the certificates are valid"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing credentials in --out"),
):
    """TLS and SuperNode-authentication credentials for a deployment: a CA (ca.crt), the
    SuperLink's certificate and key (server.pem, server.key) for each --host, and one key
    pair per site (siteI_key, siteI_key.pub). Private keys are readable by their owner only."""
    from fedrag._io import atomic_dir
    from fedrag.federation.launch.credentials import make_supernode_keys, make_tls

    if out.exists() and not out.is_dir():
        raise FedragError(f"{out} exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FedragError(f"{out} is not empty; pass --overwrite to replace its credentials")
    with atomic_dir(out) as tmp:  # the whole set appears at once, or nothing does
        make_tls(tmp, hosts=tuple(host), days=days)
        make_supernode_keys(tmp, sites)
    d = out.resolve()
    typer.echo(f"CA {d / 'ca.crt'}\nSuperLink {d / 'server.pem'} + {d / 'server.key'} (valid for {', '.join(host)}, {days} days)")
    for i in range(sites):
        typer.echo(
            f"site key {d / f'site{i}_key'} (copy to the site) + {d / f'site{i}_key.pub'} (register: flwr supernode register)"
        )
