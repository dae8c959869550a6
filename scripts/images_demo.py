"""``make images-demo``: the demo's story (devstack.demo) against the production images.

The control plane runs from the sevvo-control-plane image and the agent from the sevvo-agent
image, each in its own podman container (host network, everything on 127.0.0.1, read-only root
filesystem, UID 10001): first ``python -m services.<name> migrate`` for each service, as the
chart's migrate Job does, then auth, connections and orchestrator with migrations on start
turned off, so they run on the schema the image's Job applied. What a cluster would provide
stays on the host, from devstack: the control plane's Postgres, the Temporal dev server, the
gRPC router (the chart's GRPCRoute) and the TLS proxy in front of Temporal, plus the customer's
TLS database and the ``sevvo`` command line the story drives.

Each container gets its secrets and certificates as copies owned by UID 10001, mounted
read-only at /etc/sevvo, as a Kubernetes Secret volume would be. Every container is stopped
(and checked gone) at the end; the exit code is the demo's (1 naming the failed step).
Needs root, podman and the images from ``make images``; see deploy/k8s/README.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack import demo
from devstack.agent_process import AgentProcess, AgentSettings
from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.process_stack import (
    SERVICES,
    ChildProcess,
    PythonProcess,
    _write_secrets,
    grpc_health_probe,
    tcp_probe,
)
from devstack.processes import (
    ServerStartError,
    free_port,
)
from devstack.stack import CONTROL_PLANE_DATABASE, _ensure_database
from devstack.temporal import TemporalDevServer
from scripts.build_images import UID
from scripts.image_contents import AGENT, CONTROL_PLANE, ROOT

# Where each container finds its secret and certificate files (read-only).
MOUNT_DIR = Path("/etc/sevvo")
# crun (Debian 12's podman runtime) may lower resource limits but refuses to raise them above
# what the caller has, and its defaults are higher than a CI shell's; cgroups are left alone
# because a cgroup v1 host without every controller mounted makes crun refuse to start.
PODMAN_RUN = (
    "podman",
    "run",
    "--rm",
    "--pull=never",
    "--network=host",
    "--cgroups=disabled",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1000:1000",
    "--read-only",
)
CGROUP_HINT = (
    "\n(crun refuses a cgroup v1 host with some controllers unmounted; see"
    ' "Running the demo from the images" in deploy/k8s/README.md)'
)
MIGRATE_TIMEOUT_SECONDS = 120.0
STARTUP_TIMEOUT_SECONDS = 90.0


def image_tag(name: str) -> str:
    """The tag ``make images`` gives an image: ``localhost/<name>:<project version>``."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"localhost/{name}:{version}"


def stage_files(directory: Path, files: Mapping[str, Path]) -> dict[str, str]:
    """Copies each file into ``directory`` for UID 10001 (0400, 0444 for certificates);
    returns each variable pointing at the copy's path inside the container."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(directory, UID, UID)
    inside: dict[str, str] = {}
    for variable, source in files.items():
        copy = directory / source.name
        if not copy.exists():
            shutil.copyfile(source, copy)
            copy.chmod(0o444 if source.suffix == ".crt" else 0o400)
            os.chown(copy, UID, UID)
        inside[variable] = str(MOUNT_DIR / source.name)
    return inside


def podman_command(
    name: str,
    image: str,
    args: Sequence[str],
    *,
    env_names: Sequence[str],
    files_dir: Path,
    writable: Sequence[Path] = (),
) -> list[str]:
    """``podman run`` for one container; variables are passed by name (their values come
    from podman's own environment, so no secret path or value is on a command line)."""
    command = [*PODMAN_RUN, f"--name={name}", f"--volume={files_dir}:{MOUNT_DIR}:ro"]
    # The same path inside as outside: the host reads what the container writes there.
    command += [f"--volume={path}:{path}:rw" for path in writable]
    command += [f"--env={variable}" for variable in sorted(env_names) if variable != "PATH"]
    return [*command, image, *args]


class ImageControlPlane:
    """The control plane started from the images, and what it started, in start order."""

    def __init__(self, state_dir: Path, pki: DevPki, prefix: str) -> None:
        self.state_dir = state_dir
        self.pki = pki
        self.prefix = prefix
        self.grpc_target = ""
        # The console is not started from the image here (tests/test_images.py checks that
        # the image ships it; the chart runs it as `python -m console`).
        self.console_url: str | None = None
        self.agent_temporal_address = ""
        self.agents: list[AgentProcess] = []
        # Objects with stop(), stopped in reverse.
        self.components: list[ChildProcess | EmbeddedPostgres | TemporalDevServer] = []
        self._stopped = False

    async def stop(self) -> None:
        """Stops agents, router and proxy, services, Temporal and Postgres; then checks that
        no container of this run is left. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.gather(*(asyncio.to_thread(agent.stop) for agent in self.agents))
        failures: list[str] = []
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception as exc:  # Stop the rest regardless; report every failure after.
                failures.append(f"{type(component).__name__}: {exc}")
        self.components.clear()
        left = _containers(self.prefix)
        if left:
            # A podman client killed before its container stopped leaves the container behind.
            subprocess.run(
                ["podman", "rm", "--force", "--time=0", *left], capture_output=True, check=False
            )
            failures.append(f"containers still running after the stop (removed): {left}")
        if failures:
            raise RuntimeError("; ".join(failures))


def _containers(prefix: str) -> list[str]:
    listed = subprocess.run(
        ["podman", "ps", "--all", "--filter", f"name=^{prefix}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


class ImagePlatform:
    """devstack.demo's platform for the images: services and agent in podman containers."""

    description = (
        "From the sevvo-control-plane image: each service's migrate command, then auth,"
        " connections and orchestrator, each in its own container (host network, read-only,"
        " UID 10001). On the host, as a cluster would provide: Postgres, Temporal, the gRPC"
        " router and the TLS proxy in front of Temporal."
    )

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.control_plane_image = image_tag(CONTROL_PLANE.name)
        self.agent_image = image_tag(AGENT.name)
        self.prefix = f"sevvo-demo-{uuid.uuid4().hex[:8]}-"
        self._plane: ImageControlPlane | None = None
        self._phase_started = time.monotonic()

    def _phase(self, text: str) -> None:
        now = time.monotonic()
        print(f"   {now - self._phase_started:5.1f} s  {text}", file=self.out, flush=True)
        self._phase_started = now

    async def start_control_plane(self, state: Path) -> demo.ControlPlane:
        """Checks the images, starts the host-side infrastructure, migrates, starts services."""
        self._phase_started = time.monotonic()
        for image in (self.control_plane_image, self.agent_image):
            self._check_image(image)
        self._phase("both images are in podman's storage")
        plane = self._plane = ImageControlPlane(state, ensure_dev_pki(state / "pki"), self.prefix)
        try:
            await asyncio.to_thread(self._start, plane)
        except BaseException:
            await plane.stop()
            raise
        return plane

    def _check_image(self, image: str) -> None:
        found = subprocess.run(
            [
                "podman",
                "image",
                "inspect",
                "--format",
                '{{index .Labels "org.opencontainers.image.revision"}}',
                image,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            raise ServerStartError(f"no image {image}: run `make images` first")
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        revision = found.stdout.strip()
        note = "this checkout" if revision == head else f"commit {revision[:12]}, not HEAD"
        print(f"   {image}: built from {note}", file=self.out, flush=True)

    def _start(self, plane: ImageControlPlane) -> None:
        state, pki = plane.state_dir, plane.pki
        logs = state / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        ports = {name: free_port() for name in (*SERVICES, "router", "temporal-proxy", "jwks")}

        postgres = EmbeddedPostgres(state / "postgres", durable=False)
        plane.components.append(postgres)
        postgres.start()
        _ensure_database(postgres.url, CONTROL_PLANE_DATABASE)
        temporal = TemporalDevServer(
            db_filename=state / "temporal.sqlite", log_file=logs / "temporal.log"
        )
        plane.components.append(temporal)
        temporal.start()
        self._phase("control-plane Postgres and Temporal (host) are up")

        secret_files = {
            variable: Path(path)
            for variable, path in _write_secrets(
                state, postgres.admin_url(CONTROL_PLANE_DATABASE)
            ).items()
        }
        host_env = {"PATH": os.environ.get("PATH", "")}
        for name in SERVICES:
            files = stage_files(
                state / "containers" / f"{name}-migrate",
                {"SEVVO_DATABASE_URL_FILE": secret_files["SEVVO_DATABASE_URL_FILE"]},
            )
            env = {**host_env, **files, "SEVVO_LOG_LEVEL": "warning"}
            command = podman_command(
                f"{self.prefix}{name}-migrate",
                self.control_plane_image,
                [f"services.{name}", "migrate"],
                env_names=list(env),
                files_dir=state / "containers" / f"{name}-migrate",
            )
            result = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=MIGRATE_TIMEOUT_SECONDS,
                check=False,
            )
            if result.returncode != 0:
                hint = CGROUP_HINT if "cgroup" in result.stderr else ""
                raise ServerStartError(
                    f"services.{name} migrate exited {result.returncode}:"
                    f" {result.stderr.strip()[-800:]}{hint}"
                )
            print(f"   {result.stdout.strip()}", file=self.out, flush=True)
        self._phase("migrations applied from the control-plane image")

        endpoints = {
            "SEVVO_AUTH_ENDPOINT": f"localhost:{ports['auth']}",
            "SEVVO_CONNECTIONS_ENDPOINT": f"localhost:{ports['connections']}",
            "SEVVO_ORCHESTRATOR_ENDPOINT": f"localhost:{ports['orchestrator']}",
        }
        tls_files = {
            "SEVVO_TLS_CERT_FILE": pki.server_cert,
            "SEVVO_TLS_KEY_FILE": pki.server_key,
            "SEVVO_CA_FILE": pki.ca_cert,
        }
        services: list[ChildProcess] = []
        for name in SERVICES:
            prefix = f"SEVVO_{name.upper()}_"
            mine = {
                variable: path
                for variable, path in secret_files.items()
                if variable.startswith(prefix) or variable == "SEVVO_DATABASE_URL_FILE"
            }
            files_dir = state / "containers" / name
            env = {
                **host_env,
                **stage_files(files_dir, {**mine, **tls_files}),
                **endpoints,
                "SEVVO_GRPC_HOST": "127.0.0.1",
                "SEVVO_GRPC_PORT": str(ports[name]),
                "SEVVO_TEMPORAL_ADDRESS": temporal.address,
                "SEVVO_AUTH_JWKS_PORT": str(ports["jwks"]),
                "SEVVO_TOKEN_REFRESH_SECONDS": "2",
                # The migrate containers above applied the schema, as the chart's Job does.
                "SEVVO_MIGRATE_ON_START": "false",
                "SEVVO_LOG_LEVEL": "info",
            }
            command = podman_command(
                f"{self.prefix}{name}",
                self.control_plane_image,
                [f"services.{name}", "serve"],
                env_names=list(env),
                files_dir=files_dir,
            )
            target = f"localhost:{ports[name]}"
            # Stopped by SIGTERM, which podman passes on; SIGKILL of podman after 15 s.
            container = ChildProcess(
                name,
                command,
                env,
                logs / f"{name}.log",
                grpc_health_probe(target, pki.ca_cert),
                startup_timeout=STARTUP_TIMEOUT_SECONDS,
                stop_timeout=15.0,
            )
            plane.components.append(container)
            services.append(container)
        # auth first: the others fetch its keys as they start.
        services[0].spawn()
        services[0].wait_ready()
        for container in services[1:]:
            container.spawn()
        for container in services[1:]:
            container.wait_ready()
        self._phase("auth, connections and orchestrator serve from their containers")

        common = {
            **host_env,
            "SEVVO_TLS_CERT_FILE": str(pki.server_cert),
            "SEVVO_TLS_KEY_FILE": str(pki.server_key),
            "SEVVO_CA_FILE": str(pki.ca_cert),
            "SEVVO_GRPC_HOST": "127.0.0.1",
            "SEVVO_LOG_LEVEL": "info",
        }
        if "PYTHONPATH" in os.environ:  # A worktree's devstack, not the installed package's.
            common["PYTHONPATH"] = os.environ["PYTHONPATH"]
        plane.grpc_target = f"localhost:{ports['router']}"
        plane.agent_temporal_address = f"localhost:{ports['temporal-proxy']}"
        router = PythonProcess(
            "router",
            ["devstack.grpc_router"],
            {**common, **endpoints, "SEVVO_GRPC_PORT": str(ports["router"])},
            logs / "router.log",
            grpc_health_probe(plane.grpc_target, pki.ca_cert),
        )
        proxy = PythonProcess(
            "temporal-proxy",
            ["devstack.tls_proxy"],
            {
                **common,
                "SEVVO_PROXY_UPSTREAM": temporal.address,
                "SEVVO_PROXY_PORT": str(ports["temporal-proxy"]),
                "SEVVO_PROXY_CLIENT_CA_FILE": str(pki.ca_cert),
            },
            logs / "temporal-proxy.log",
            tcp_probe(ports["temporal-proxy"]),
        )
        for process in (router, proxy):
            plane.components.append(process)
            process.spawn()
        for process in (router, proxy):
            process.wait_ready()
        self._phase(f"the gRPC router (host) serves {plane.grpc_target}")

    async def start_agent(self, token: str) -> demo.DemoAgent:
        """Starts the agent image with the token and the dev client certificate mounted."""
        plane = self._plane
        if plane is None:
            raise RuntimeError("the control plane is not started")
        started = time.monotonic()
        token_file = plane.state_dir / "acme-agent-deployment-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        files_dir = plane.state_dir / "containers" / "agent"
        inside = stage_files(
            files_dir,
            {
                "token": token_file,
                "ca": plane.pki.ca_cert,
                "cert": plane.pki.client_cert,
                "key": plane.pki.client_key,
            },
        )
        settings = AgentSettings(
            token_file=Path(inside["token"]),
            control_plane_endpoint=plane.grpc_target,
            temporal_address=plane.agent_temporal_address,
            ca_file=Path(inside["ca"]),
            temporal_client_cert=Path(inside["cert"]),
            temporal_client_key=Path(inside["key"]),
            bearer_check_seconds=demo.AGENT_BEARER_CHECK_SECONDS,
        )
        # The agent writes its ready and liveness files beside its log, which the host reads.
        run_dir = plane.state_dir / "agent-run"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(run_dir, UID, UID)
        names = [*settings.environment(), "SEVVO_AGENT_READY_FILE", "SEVVO_AGENT_LIVENESS_FILE"]
        command = podman_command(
            f"{self.prefix}agent",
            self.agent_image,
            [],
            env_names=names,
            files_dir=files_dir,
            writable=[run_dir],
        )
        agent = AgentProcess(settings, run_dir / "acme-agent.log", command)
        plane.agents.append(agent)
        agent.start(wait=False)
        await asyncio.to_thread(agent.wait_until_ready, timeout=STARTUP_TIMEOUT_SECONDS)
        print(
            f"   {time.monotonic() - started:5.1f} s  the agent container polls its task queue",
            file=self.out,
            flush=True,
        )
        return agent


def hybrid_controllers(cgroup_root: Path = Path("/sys/fs/cgroup")) -> list[str]:
    """The controllers a hybrid cgroup host leaves on its cgroup v2 mount (``unified``), which
    crun refuses ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2");
    empty on a pure v1 or pure v2 host."""
    controllers = cgroup_root / "unified" / "cgroup.controllers"
    if not controllers.is_file():
        return []
    return controllers.read_text().split()


def prepare_cgroups(cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
    """Mounts each controller a hybrid host left on cgroup v2 in the v1 hierarchy instead,
    which drops it from v2 (a controller is in one hierarchy at a time), so crun can run.

    Needs root; said out loud, because it changes the host's cgroup mounts until reboot.
    """
    for name in hybrid_controllers(cgroup_root):
        target = cgroup_root / name
        target.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "cgroup", "-o", name, "cgroup", str(target)], check=True)
        print(f"host: mounted cgroup controller {name} at {target} (v1), so crun can start")


def main() -> int:
    """Runs the demo against the images; exits 0 only if every step passed."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        print("make images-demo needs root and podman (apt-get install podman)", file=sys.stderr)
        return 2
    prepare_cgroups()
    return demo.main(ImagePlatform(sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
