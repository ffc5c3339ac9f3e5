"""What a federated run's privacy protections covered: cost.json's `dp`, `local_dp` and
`secure_aggregation` sections and the run's `privacy.md`, written from what the
accountants and the rounds recorded."""

from __future__ import annotations

from fedrag.federation.task import FedTask

NOT_COVERED = "site metrics (losses, Recall@5, counts) leave the sites without noise"
SHARE = "the site's share of examples"  # how SecAgg+ weighs a site's update without central DP


def privacy_sections(history: list[dict], task: FedTask, accountant) -> dict:
    """`{"dp": ..., "local_dp": ...}` for the protections that were on."""
    out = {}
    if accountant is not None:
        out["dp"] = dp_report(accountant.get_privacy_spent(), task, history)
    local = local_dp_report(history, task)
    if local:
        out["local_dp"] = local
    if task.privacy.secagg:
        out["secure_aggregation"] = secagg_report(history, task)
    return out


def secagg_report(history: list[dict], task: FedTask) -> dict:
    """cost.json's `secure_aggregation`: the protocol's settings and what its rounds saw."""
    rounds = [h["secure_aggregation"] for h in history if "secure_aggregation" in h]
    return {
        "protocol": "SecAgg+ (Flower)",
        "rounds": len(rounds),
        "threshold": sorted({r["threshold"] for r in rounds}),
        "clip": task.privacy.secagg_clip,
        "quantization": task.privacy.secagg_quantization,
        "dropped_sites": sum(r["dropped"] for r in rounds),
        "clipped_values": sum(r.get("clipped_values", 0) for r in rounds),
        "server_sees": "per round, the weighted sum of the sites' updates (decoded); never one site's update",
    }


def dp_report(spent, task: FedTask, history: list[dict] = ()) -> dict:
    """The privacy report, from what the accountant saw happen: it names coverage only
    for noised releases that were counted (a run with none covers nothing), and from what
    the rounds recorded (`history`), how many sites each release averaged."""
    released = int(spent.num_releases)
    return {
        "epsilon": float(spent.epsilon) if released else None,
        "delta": float(spent.delta),
        "releases": released,
        "noise_multiplier": task.privacy.dp_noise,
        "clip": task.privacy.dp_clip,
        "weighting": "equal: each site's clipped update is 1/n of the round's mean, whatever its example count",
        "sites_per_round": sorted({int(h["dp_sites"]) for h in history if "dp_sites" in h}),
        "covers": (
            "the aggregated model updates of every round of every phase (RDP, composed)"
            if released
            else "nothing: no noised release was made"
        ),
        "not_covered": NOT_COVERED,
    }


def local_dp_report(history: list[dict], task: FedTask) -> dict | None:
    """cost.json's `local_dp`: each site's ε as its last reply reported it (None when off)."""
    sites: dict[str, dict] = {}
    for entry in history:
        for node, m in entry.get("site_metrics", {}).items():
            if "local-dp-epsilon" in m:
                sites[node] = {"epsilon": m["local-dp-epsilon"], "releases": int(m["local-dp-releases"])}
    if not sites and task.privacy.local_dp_noise <= 0:
        return None
    return {
        "noise_multiplier": task.privacy.local_dp_noise,
        "clip": task.privacy.local_dp_clip,
        "delta": task.privacy.dp_delta,
        "sites": sites,
        "covers": "each site's model updates, noised on the site before they leave it (RDP, composed per site)",
        "not_covered": NOT_COVERED,
    }


def _leaves(dp, local, secure) -> list[str]:
    """The table of what left a site, per message kind, in what form, under what ε."""
    form = " and ".join(
        f
        for f, on in (
            ("clipped", bool(dp)),
            ("noised on the site", bool(local)),
            ("masked (the server decodes only the sum)", bool(secure)),
        )
        if on
    )
    eps = []
    if local:
        eps.append("local ε per site (below)")
    if dp:
        eps.append("central ε (below) for what the server publishes")
    return [
        "## What left each site",
        "",
        "| message | what | form | covered by |",
        "|---|---|---|---|",
        f"| train reply | the phase's trainable tensors (the round's update) | {form or 'clear'} | {'; '.join(eps) or 'nothing'} |",
        "| train reply | metrics: loss, example and token counts, timings | clear | nothing |",
        "| evaluate reply (when sites evaluate) | metrics: loss, Recall@5, count | clear | nothing |",
        *(["| secure aggregation | public keys, encrypted key shares, unmasking shares | protocol | – |"] if secure else []),
        "",
    ]


def privacy_markdown(summary: dict) -> str:
    """The run's privacy report in words: what left the sites in what form, what each
    protection covered, at what (ε, δ)."""
    lines = ["# Privacy report", ""]
    dp, local, secure = summary.get("dp"), summary.get("local_dp"), summary.get("secure_aggregation")
    lines += _leaves(dp, local, secure)
    if secure:
        lines += [
            "## Secure aggregation",
            "",
            f"Flower's SecAgg+ over {secure['rounds']} rounds, reconstruction threshold "
            f"{', '.join(map(str, secure['threshold']))}: each site masked its update, each value weighted by "
            f"{'1/n (central DP)' if dp else SHARE} and bounded by "
            f"±{secure['clip']:g}, quantised to {secure['quantization']} "
            f"levels; the server decoded only the weighted sum. {secure['dropped_sites']} site-rounds dropped out "
            f"and were unmasked from their shares; {secure['clipped_values']} values were clipped.",
            "",
        ]
    if not dp and not local:
        lines += [
            (
                "No differential privacy was on: the sum of the sites' updates is exact, and one site's update can be "
                "inferred from it by anyone who knows the others'."
                if secure
                else "No differential privacy was on: each site's model updates reached the server as the site computed them."
            ),
            "The sites' data (questions, passages, the knowledge store) never left them; the updates can still leak it.",
        ]
    if dp:
        eps = f"ε = {dp['epsilon']:.3g}" if dp["epsilon"] is not None else "no ε (nothing was released)"
        n = ", ".join(map(str, dp.get("sites_per_round") or [])) or "–"
        lines += [
            "## Central differential privacy",
            "",
            f"Sites clipped their updates to L2 norm {dp['clip']:g}; the server averaged them with equal weights (each "
            f"site 1/n of the mean, whatever its example count; n = the sites aggregated in a round: {n}) and added "
            f"Gaussian noise of multiplier {dp['noise_multiplier']:g} to their sum (std {dp['noise_multiplier']:g} × "
            f"{dp['clip']:g} / n on the mean). {dp['releases']} releases composed: {eps}, δ = {dp['delta']:g} "
            "(client level: a whole site's data added or removed). "
            + (
                "Under secure aggregation the server saw only the sum of the clipped updates, unnoised."
                if secure
                else "The server saw each site's clipped update unnoised."
            ),
            "",
        ]
    if local:
        lines += [
            "## Local differential privacy",
            "",
            f"Each site clipped its update to L2 norm {local['clip']:g} and added Gaussian noise of multiplier "
            f"{local['noise_multiplier']:g} (or its own, higher, node-config value) before it left the site. "
            f"Per site, δ = {local['delta']:g}:",
            "",
            "| site | releases | ε |",
            "|---|---|---|",
            *[f"| {node} | {s['releases']} | {s['epsilon']:.3g} |" for node, s in sorted(local["sites"].items())],
            "",
        ]
    if dp or local:
        lines += [f"Not covered: {NOT_COVERED}. `--evaluate-every 0` stops the evaluation metrics.", ""]
    return "\n".join(lines) + "\n"
