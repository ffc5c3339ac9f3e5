"""Federation behaviours issue #39 listed as untested, checked in-process: FedYogi's server
update, a site's `require-secagg` policy, and `--fraction` below 1. (The server's
`--eval-qa` rides on tests/test_federation.py's FedAdam simulation; SecAgg with local and
with central DP: tests/test_secagg.py.)"""

import numpy as np
import pytest

from fedrag.errors import FedragError
from fedrag.federation.task import FedTask
from test_values_privacy import _identity, _Nodes  # noqa: F401 - the fixture: a Flower process's identity


def _round(strategy, rnd: int, current: np.ndarray, updates: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """One round of `strategy` from `current`: the sites reply `current + update`, weighted
    by their `num-examples`; returns the new global array."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    messages = list(strategy.configure_train(rnd, ArrayRecord({"w": Array(current)}), ConfigRecord({"phase": 0}), _Nodes(2)))
    assert len(messages) == 2
    replies = [
        Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(current + u)}), "metrics": MetricRecord({"num-examples": n})}),
            reply_to=m,
        )
        for m, u, n in zip(messages, updates, weights)
    ]
    arrays, _ = strategy.aggregate_train(rnd, replies)
    return arrays["w"].numpy()


def test_fedyogi_takes_the_yogi_step_of_reddi_et_al_on_fedavgs_pseudo_gradient():
    """FedYogi (Reddi et al. 2021, Algorithm 2): with Δ the FedAvg pseudo-gradient,
    m = β1 m + (1-β1) Δ, v = v - (1-β2) Δ² sign(v - Δ²), x = x + η m / (√v + τ), with
    Flower's defaults β1 = 0.9, β2 = 0.99, τ = 1e-3, v and m starting at 0, and fedrag's
    --server-lr as η. Round 2's Δ is larger than round 1's on half the coordinates, so v
    grows there and shrinks elsewhere: the sign term acts both ways."""
    from fedrag.federation.server.aggregator import make_aggregator

    eta, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    strategy = make_aggregator(FedTask(stage="ralt", aggregator="fedyogi", server_lr=eta, min_sites=2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=64).astype(np.float32)
    x_ref, m, v = x.astype(np.float64), np.zeros(64), np.zeros(64)
    scale = np.where(np.arange(64) % 2 == 0, 3.0, 0.1)  # round 2's updates: larger, then smaller, than round 1's
    signs = []
    for rnd, size in ((1, np.ones(64)), (2, scale)):
        updates = [(rng.normal(size=64) * 0.01 * size).astype(np.float32) for _ in range(2)]
        weights = [1, 3]
        x = _round(strategy, rnd, x, updates, weights)
        delta = (1 * updates[0].astype(np.float64) + 3 * updates[1]) / 4
        signs.append(np.sign(v - delta**2))
        m = b1 * m + (1 - b1) * delta
        v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        x_ref = x_ref + eta * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(x, x_ref, rtol=1e-5, atol=1e-6, err_msg=f"round {rnd}")
        x_ref = x.astype(np.float64)  # the next round starts from the global model as sent (float32)
    assert (signs[1] > 0).any() and (signs[1] < 0).any(), "round 2 grows v somewhere and shrinks it elsewhere"


def test_a_site_that_requires_secure_aggregation_refuses_a_round_without_it_in_one_line():
    """A SuperNode started with `--node-config 'require-secagg=true'` (docs/privacy.md) trains
    nothing and sends nothing for a train message without the SecAgg+ protocol: its
    ClientApp (the one fedrag's sites run) fails before it loads its data. Without the
    setting, the same message goes through to training."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

    import fedrag
    from fedrag.federation.site.client_app import make_client_app
    from fedrag.federation.site.policy import VERSION_KEY
    from fedrag.federation.privacy.secagg import make_secagg_mod

    def message():  # from a server of this fedrag version, which every round's config names
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
                "config": ConfigRecord({"phase": 0, "server-round": 1, VERSION_KEY: fedrag.__version__}),
            }
        )
        return Message(content, dst_node_id=1, message_type="train")

    def context(node_config):
        return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})

    loaded = []
    app = make_client_app(FedTask(stage="ralt"), site_data=lambda ctx: loaded.append(ctx) or ("unused", []))
    with pytest.raises(FedragError) as err:
        app(message(), context({"require-secagg": "true"}))
    assert "\n" not in str(err.value) and "requires secure aggregation" in str(err.value) and "--secagg" in str(err.value)
    assert loaded == [], "nothing of the site's data was read"
    passed = []
    for setting in ({"require-secagg": "false"}, {}):
        make_secagg_mod()(message(), context(setting), lambda msg, ctx: passed.append(msg.metadata.message_type))
    assert passed == ["train", "train"]


def test_a_fraction_below_1_samples_that_share_of_the_connected_sites_each_round():
    """`--fraction 0.67` of 3 connected sites: 2 sites train each round and 2 evaluate
    (Flower's sampler, as fedrag's aggregator configures it), never the same site twice in
    a round, and over the rounds every site is drawn; the count never drops below
    `--min-sites`. (No new simulation for it: the sampling is the whole of the setting.)"""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from fedrag.federation.server.aggregator import make_aggregator

    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    strategy = make_aggregator(FedTask(stage="ralt", fraction=0.67, min_sites=2))
    drawn = set()
    for rnd in range(1, 21):
        train = [m.metadata.dst_node_id for m in strategy.configure_train(rnd, arrays, ConfigRecord({}), _Nodes(3))]
        evaluate = [m.metadata.dst_node_id for m in strategy.configure_evaluate(rnd, arrays, ConfigRecord({}), _Nodes(3))]
        assert len(set(train)) == len(train) == 2 and len(set(evaluate)) == len(evaluate) == 2
        drawn.update(train)
    assert drawn == {1, 2, 3}
    # a third of 3 sites is 1, below --min-sites 2: min-sites wins
    strategy = make_aggregator(FedTask(stage="ralt", fraction=0.34, min_sites=2))
    assert len(list(strategy.configure_train(1, arrays, ConfigRecord({}), _Nodes(3)))) == 2
    # with server-side --eval-qa the sites are not asked to evaluate at all
    strategy = make_aggregator(FedTask(stage="ralt", fraction=0.67, min_sites=2, eval_qa="held-out.jsonl"))
    assert list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), _Nodes(3))) == []


def test_a_site_that_never_joins_fails_the_run_after_the_round_timeout(tiny_models, demo_dir, tmp_path):
    """Flower's stock strategies wait forever for min_available_nodes; fedrag's grid gives up
    after --round-timeout with one line, and no checkpoint or result is written. (A real
    deployment's one-line failure, through flwr and the launcher: test_deployment.py's
    killed site.)"""
    from in_process import one_round, run_in_process

    task, sites = one_round(tiny_models, demo_dir, tmp_path, min_sites=2, round_timeout=1)
    out = tmp_path / "run"
    with pytest.raises(FedragError, match="only 1 of 2 required sites were connected for 1s"):
        run_in_process(task, sites[:1])  # site 2 never connects
    assert not (out / "checkpoint").exists() and not (out / "cost.json").exists()


def test_a_simulation_whose_engine_cannot_start_ends_in_one_line_with_exit_1(
    tiny_models, demo_dir, tmp_path, monkeypatch, capsys
):
    """Ray failing to start (here: its temporary directory cannot be made; on an overloaded
    machine, its node not registering within Ray's fixed 30 s) ends a real simulation with
    Flower's RuntimeError chained to Ray's: the CLI prints one line naming Ray's reason, with
    no Flower traceback before it, and exits 1 (an environment failure, not a usage error)."""
    from test_cli import run

    import threading

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "a-file" / "ray"))
    (tmp_path / "a-file").write_text("")
    before = set(threading.enumerate())
    args = ["federate", "--stage", "ralt", "--sites", "2", "--rounds", "1", "--local-steps", "1", "--batch-size", "2"]
    args += ["--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl", "--out", tmp_path / "run"]
    code, _, stderr = run(
        monkeypatch, capsys, *args, "--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"]
    )
    err = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "the Flower simulation failed: [Errno 20] Not a directory" in err[0], err
    assert not (tmp_path / "run" / "cost.json").exists() and not (tmp_path / "run" / "checkpoint").exists()
    # Flower leaves the ServerApp's thread waiting for sites; left running, it loaded the server's
    # models beside the next test's, and torch's process-wide default dtype mixed bfloat16 and float32
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads of the failed run still running: {left}"
