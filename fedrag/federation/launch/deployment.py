"""A real multi-site Flower deployment on 127.0.0.1: one SuperLink, one SuperNode per
site, the run submitted with `flwr run`. Every process started here is stopped by
PID (with the detached SuperExec it spawns), never by name.

TLS: pass `certs` (CA + server certificate/key for 127.0.0.1). SuperNode
authentication (needs TLS): pass `auth_keys` (one EC private/public key pair per
site); the public keys are registered with `flwr supernode register`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedrag._env import apply_defaults
from fedrag.federation.site.policy import DEFAULT_MODELS
from fedrag.federation.launch.processes import BIN, children, free_port
from fedrag.federation.task import FedTask


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


@dataclass
class LocalDeployment:
    """SuperLink + SuperNodes on loopback, in `workdir` (logs, FLWR_HOME, state)."""

    workdir: Path
    certs: Certs | None = None
    auth_keys: list[tuple[Path, Path]] | None = None
    threads_per_site: int | None = None  # BLAS/OpenMP threads of each site's ClientApp processes
    resident: bool = True  # each site's models stay loaded in a worker (fedrag.federation.site.resident_worker)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    workers: list[tuple[str, str]] = field(default_factory=list)  # (socket, process name) per resident worker

    def __post_init__(self):
        apply_defaults()
        self.workdir = Path(self.workdir).resolve()  # subprocesses run elsewhere: no relative paths
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        # SuperLink starts `flower-superexec` by name: our interpreter's bin dir must be on PATH
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "FLWR_HOME": str(self.flwr_home), "PYTHONUNBUFFERED": "1", "PATH": path}
        self.port = free_port()  # Flower (1.41 on) serves the Control, Fleet and Runtime APIs on one port

    # ------------------------------------------------------------------ processes
    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env or self.env, cwd=self.workdir, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def _tls(self, server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        if server:
            return [
                "--ssl-ca-certfile",
                str(self.certs.ca),
                "--ssl-certfile",
                str(self.certs.cert),
                "--ssl-keyfile",
                str(self.certs.key),
            ]
        return ["--root-certificates", str(self.certs.ca)]

    def start_superlink(self) -> None:
        # Flower's in-memory state and object store (its default): with --database FILE the
        # SuperLink's SQLite store took ~25 s to take in one site's 20 MB reply on this box
        # (benchmarks/federated_overhead.py). fedrag resumes from its own checkpoint, not this state.
        cmd = [
            str(BIN / "flower-superlink"),
            *self._tls(True),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.auth_keys:
            cmd.append("--enable-supernode-auth")
        self._start("superlink", cmd)
        self._wait_port(self.port, self.procs["superlink"])
        self.connect(f"127.0.0.1:{self.port}", str(self.certs.ca) if self.certs else None)
        if self.auth_keys:
            for i, (_, public) in enumerate(self.auth_keys):
                self.flwr("supernode", "register", str(public), "fedrag", "--name", f"site{i}")

    def connect(self, address: str, root_certificates: str | None = None) -> None:
        """Use a SuperLink started elsewhere (`HOST:PORT`): only `submit` runs here."""
        conn = {"address": address}
        conn.update({"root-certificates": str(Path(root_certificates).resolve())} if root_certificates else {"insecure": True})
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in conn.items())
        (self.flwr_home / "config.toml").write_text(f'[superlink]\ndefault = "fedrag"\n\n[superlink.fedrag]\n{body}\n')

    def start_supernode(
        self, i: int, corpus: str, train: str, allow_models: list[str] | None = None, allow_strategies: list[str] | None = None
    ) -> subprocess.Popen:
        """One site. Its ClientApp processes inherit the SuperNode's environment, so
        `threads_per_site` caps their torch threads: sites sharing one machine would
        otherwise each start one thread per core and slow each other down.
        `allow_models`: the site policy's models (default: the bundled ones);
        `allow_strategies`: packages whose `module:attribute` strategies it imports."""
        node_config = f'corpus="{Path(corpus).resolve()}" train="{Path(train).resolve()}" site={i}'
        if allow_models:
            node_config += f' allow-models="{",".join(allow_models)}"'
        if allow_strategies:
            node_config += f' allow-strategies="{",".join(allow_strategies)}"'
        cmd = [
            str(BIN / "flower-supernode"),
            *self._tls(False),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--node-config",
            node_config,
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ]
        if self.auth_keys:
            cmd += ["--auth-supernode-private-key", str(self.auth_keys[i][0])]
        env = dict(self.env)
        if self.threads_per_site:
            n = str(self.threads_per_site)
            env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
        if self.resident:  # it imports while the SuperNode starts; `submit` waits for it
            from fedrag.federation.site.resident_worker import start_worker

            sock = start_worker(lambda c: self._start(f"worker{i}", c, env))
            self.workers.append((sock, f"worker{i}"))
            cmd[cmd.index("--node-config") + 1] += f' resident="{sock}"'
        return self._start(f"site{i}", cmd, env)

    def flwr(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        from fedrag.errors import FedragError

        try:
            res = subprocess.run(
                [str(BIN / "flwr"), *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise FedragError(f"flwr {args[0]} did not finish within {timeout:.0f}s; logs in {self.workdir}") from None
        with open(self.workdir / "flwr-cli.log", "a") as fh:
            fh.write(f"$ flwr {' '.join(args)}\n{res.stdout}\n{res.stderr}\n")
        if check and res.returncode != 0:
            from fedrag.errors import FedragError

            raise FedragError(f"flwr {args[0]} failed (exit {res.returncode}); see {self.workdir / 'flwr-cli.log'}")
        return res

    def submit(self, task: FedTask, timeout: float = 1800) -> subprocess.CompletedProcess:
        """`flwr run` the app (written from the installed package) with `task` as
        run-config overrides; waits for the end."""
        from fedrag.federation.launch.app_pyproject import write_app

        from fedrag.federation.site.resident_worker import wait_listening

        for sock, name in self.workers:
            if name in self.procs:
                wait_listening(sock, self.procs[name], self.workdir / f"{name}.log")
        app_dir = write_app(self.workdir / "app")
        overrides = self.workdir / "run-config.toml"
        lines = []
        for k, v in task.to_config().items():
            lines.append(f"{k.replace('_', '-')} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
        overrides.write_text("\n".join(lines) + "\n")
        try:
            return self.flwr("run", str(app_dir), "fedrag", "--run-config", str(overrides), "--stream", timeout=timeout)
        finally:
            from fedrag.federation.server.server_app import raise_recorded_error

            raise_recorded_error(task)

    def _wait_port(self, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                from fedrag.errors import FedragError

                tail = (self.workdir / "superlink.log").read_text().strip().splitlines()[-1:]
                raise FedragError(f"flower-superlink exited with code {proc.returncode}: {tail[0] if tail else ''}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s; see {self.workdir}/superlink.log")

    def stop(self, name: str | None = None) -> None:
        """Stop one process (or all) and every descendant, by PID."""
        names = [name] if name else list(self.procs)
        for n in names:
            proc = self.procs.pop(n, None)
            if proc is None:
                continue
            pids = [proc.pid, *children(proc.pid)]
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            for pid in pids[1:]:  # reap stragglers (e.g. the detached SuperExec)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import shutil

        self.stop()
        for sock, _ in self.workers:
            shutil.rmtree(Path(sock).parent, ignore_errors=True)


def run_timeout(task: FedTask) -> float:
    """How long `flwr run` may take: every round of every phase waiting out
    `task.aggregation.round_timeout` twice, plus start-up (the server fails short rounds itself)."""
    return 600 + 2 * task.aggregation.round_timeout * task.training.rounds * len(task.plan().phases)


def deploy(
    task: FedTask,
    site_paths: list[dict[str, str]],
    workdir: str | Path,
    certs: Certs | None = None,
    auth_keys=None,
    timeout: float | None = None,
    threads_per_site: int | None = None,
    resident: bool = True,
) -> dict:
    """Run `task` on a local SuperLink + one SuperNode per site; return the server's cost.json.

    The sites share this machine's cores: `threads_per_site` defaults to cores // sites.
    `timeout` (default: long enough for every round to wait out `task.aggregation.round_timeout`
    twice) bounds `flwr run`; the server itself fails a round that misses its sites."""
    timeout = timeout or run_timeout(task)
    threads = threads_per_site or max(1, (os.cpu_count() or 1) // len(site_paths))
    with LocalDeployment(Path(workdir), certs, auth_keys, threads, resident) as dep:
        dep.start_superlink()
        # on loopback every site is the user's own: each allows the bundled models and this task's,
        # and imports the task's strategy when the task names one by import path
        strategy = task.models.strategy
        packages = [strategy.partition(":")[0]] if ":" in strategy else None
        allow = [
            *DEFAULT_MODELS,
            *(m for m in (task.models.retriever, task.models.generator) if m not in DEFAULT_MODELS + ("none",)),
        ]
        for i, p in enumerate(site_paths):
            models = [str(Path(m).resolve()) if Path(m).exists() else m for m in allow]
            dep.start_supernode(i, p["corpus"], p["train"], allow_models=models, allow_strategies=packages)
        dep.submit(task, timeout=timeout)
    cost = Path(task.run.out) / "cost.json"
    if not cost.exists():
        from fedrag.errors import FedragError

        raise FedragError(f"the deployment run ended without writing {cost}; logs in {workdir}")
    return json.loads(cost.read_text())


def submit_remote(task: FedTask, address: str, root_certificates: str | None = None, timeout: float | None = None) -> dict:
    """Submit `task` to a running SuperLink (its sites already connected); wait for the
    end. `task.run.out` is a path on the SuperLink's host: its cost.json is returned when
    this host can read it, else where the outputs are."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="fedrag-submit-"))
    with LocalDeployment(work) as dep:
        dep.connect(address, root_certificates)
        dep.submit(task, timeout=timeout or run_timeout(task))
    shutil.rmtree(work, ignore_errors=True)  # kept when the submission fails: its error names the logs in it
    cost = Path(task.run.out) / "cost.json"
    return json.loads(cost.read_text()) if cost.is_file() else {"out": task.run.out, "outputs": "on the SuperLink's host"}
