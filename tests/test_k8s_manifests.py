"""The Helm charts in deploy/k8s render with the real Helm SDK, pass strict Kubernetes schema
validation, and keep every pod restricted."""

from __future__ import annotations

import ast
import base64
import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.auth.rewrap import KEK_SCHEME
from sevvo.runtime.health import LIVENESS
from sevvo.runtime.rewrap import RewrapConfig
from sevvo.runtime.sealing import Keyring

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
CONTROL_PLANE = K8S / "sevvo-control-plane"
AGENT = K8S / "sevvo-agent"
KUBE_VERSION = "1.31"
COMPONENTS = ("auth", "connections", "orchestrator")
SECRETS_DIR = "/var/run/secrets/sevvo/"
COMPONENT_LABEL = "app.kubernetes.io/component"
KEYRING_FILE = "/var/run/secrets/sevvo/connections-keyring/keyring.json"
ORCHESTRATOR_KEYRING_FILE = "/var/run/secrets/sevvo/orchestrator-keyring/keyring.json"
CA_FILE = "/var/run/secrets/sevvo/ca/ca.crt"
MODE_0440 = 0o440

# The agent refuses to render without these two; everything else has a default.
AGENT_REQUIRED: dict[str, Any] = {
    "controlPlane": {"host": "api.sevvo.example"},
    "temporal": {"address": "temporal.sevvo.example:443"},
}
AGENT_ALL_OPTIONS: dict[str, Any] = {
    "controlPlane": {"host": "api.sevvo.example"},
    "temporal": {
        "address": "temporal.sevvo.example:443",
        "legacyNamespace": "acme",
        "drainLegacy": False,
        "serverName": "temporal.internal.example",
        "clientTls": {"enabled": True},
    },
    "caBundle": {"enabled": True, "kind": "Secret"},
    "imagePullSecrets": ["regcred"],
    "extraEnv": [{"name": "SEVVO_EXTRA", "value": "1"}],
}
AGENT_SIDECAR: dict[str, Any] = {
    **AGENT_REQUIRED,
    "sidecar": {
        "enabled": True,
        "name": "reporting",
        "connection": "reporting-db",
        "role": "readonly",
        "ttl": "1h",
        "format": "pgpass",
        "fileName": "db.pgpass",
        "containers": [
            {
                "name": "report",
                "image": "registry.example.com/reporting:1.0",
                "env": [{"name": "PGPASSFILE", "value": "/var/run/sevvo/db.pgpass"}],
            },
            {
                "name": "api",
                "image": "registry.example.com/reporting-api:1.0",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsUser": 10001,
                },
            },
        ],
    },
}
CONTROL_PLANE_ALL_OPTIONS: dict[str, Any] = {
    "global": {
        "imagePullSecrets": ["regcred"],
        "image": {"tag": "1.2.3"},
        "tls": {"caSecret": "corp-ca"},
        "temporal": {"legacyNamespace": "sevvo", "drainLegacy": False, "tls": True},
    },
    "rewrap": {"enabled": True, "batchSize": 500},
    **{
        name: {
            "replicas": 3,
            "extraEnv": [{"name": "SEVVO_EXTRA", "value": "1"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "sevvo"}],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {COMPONENT_LABEL: name}},
                            },
                        }
                    ]
                }
            },
        }
        for name in COMPONENTS
    },
}
# The web console with every option of its own (the endpoint named directly, a CA bundle).
CONTROL_PLANE_ALL_OPTIONS["console"] = {
    "enabled": True,
    "replicas": 3,
    "host": "console.sevvo.example",
    "servicesEndpoint": "api.sevvo.example:443",
    "ca": {"existingSecret": "corp-ca"},
    "ingress": {"enabled": True, "tlsSecret": "console-tls"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
}
# auth mid-rotation: retired KEKs given to auth and its rewrap Job.
RETIRED_KEKS: dict[str, Any] = {
    "auth": {"retiredKeks": {"existingSecret": "sevvo-auth-retired-keks", "key": "keks"}}
}
CONTROL_PLANE_ALL_OPTIONS["auth"].update(copy.deepcopy(RETIRED_KEKS["auth"]))

# Both routes of the one endpoint on (tests/test_k8s_routing.py checks where they route).
CONTROL_PLANE_ENDPOINT: dict[str, Any] = {
    "global": {"tls": {"caSecret": "corp-ca"}},
    "endpoint": {
        "host": "api.sevvo.example",
        "grpcRoute": {"enabled": True, "parentRefs": [{"name": "public", "sectionName": "https"}]},
        "ingress": {"enabled": True, "tlsSecret": "api-tls"},
    },
}
GATEWAY_API_GROUP = "gateway.networking.k8s.io/"

# The standard knobs, all set, with replicas 2 (topology spread and disruption budgets on).
KNOBS: dict[str, Any] = {
    "replicas": 2,
    "podAnnotations": {"example.com/scrape": "true"},
    "podLabels": {"team": "data", COMPONENT_LABEL: "ignored"},
    "priorityClassName": "sevvo-high",
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/s"}},
    "extraVolumes": [{"name": "extra", "emptyDir": {"sizeLimit": "1Mi"}}],
    "extraVolumeMounts": [{"name": "extra", "mountPath": "/var/run/extra", "readOnly": True}],
    "extraContainers": [
        {
            "name": "proxy",
            "image": "registry.example.com/proxy:1.0",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
}
CONTROL_PLANE_KNOBS: dict[str, Any] = {
    "global": {"tls": {"caSecret": "corp-ca"}},
    "networkPolicy": {
        "endpointNamespaces": ["gateway"],
        "extraIngressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
        "probeCidrs": ["10.0.0.0/16"],
        "database": {"port": 6432, "to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}]},
        "temporalTo": [{"namespaceSelector": {"matchLabels": {"name": "temporal"}}}],
        "extraEgress": [{"ports": [{"protocol": "TCP", "port": 4317}]}],
    },
    "endpoint": {
        "host": "api.sevvo.example",
        "ingress": {"enabled": True, "tlsSecret": "api-tls"},
    },
    **{
        name: {**KNOBS, "service": {"annotations": {"example.com/lb": "internal"}}}
        for name in COMPONENTS
    },
}
CONTROL_PLANE_KNOBS["auth"]["bootstrapToken"] = {"existingSecret": "sevvo-bootstrap"}
# The console beside a routed endpoint, its own Ingress, the standard knobs, policies narrowed.
CONSOLE_KNOBS: dict[str, Any] = copy.deepcopy(KNOBS)
CONTROL_PLANE_CONSOLE: dict[str, Any] = {
    "endpoint": {"host": "api.sevvo.example", "ingress": {"enabled": True}},
    "networkPolicy": {"endpointNamespaces": ["ingress-nginx"], "probeCidrs": ["10.0.0.0/16"]},
    "console": CONSOLE_KNOBS
    | {
        "enabled": True,
        "host": "console.sevvo.example",
        "extraEnv": [{"name": "SEVVO_CONSOLE_EXTRA", "value": "1"}],
        "service": {"annotations": {"example.com/lb": "internal"}},
        "ingress": {"enabled": True, "tlsSecret": "console-tls", "annotations": {"a": "b"}},
    },
}
AGENT_KNOBS: dict[str, Any] = {
    **AGENT_REQUIRED,
    **KNOBS,
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ],
}


@pytest.fixture(scope="module")
def control_plane() -> Iterator[helm.Chart]:
    with helm.Chart.load(CONTROL_PLANE) as chart:
        yield chart


@pytest.fixture(scope="module")
def agent() -> Iterator[helm.Chart]:
    with helm.Chart.load(AGENT) as chart:
        yield chart


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render a chart offline and parse every Kubernetes object it produces."""
    manifests = chart.render(values, name="sevvo", namespace="sevvo")
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"][COMPONENT_LABEL])


def deployment_for(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (deployment,) = [d for d in of_kind(objects, "Deployment") if component(d) == name]
    return deployment


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(deployment)["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def all_deployments(control_plane: helm.Chart, agent: helm.Chart) -> list[dict[str, Any]]:
    """Every Deployment and Job either chart renders, with every optional feature switched on
    (the Jobs are the control plane's migrate and rewrap hooks: the same pod rules hold for
    them)."""
    control = render(control_plane, CONTROL_PLANE_ALL_OPTIONS)
    return (
        of_kind(control, "Deployment")
        + of_kind(control, "Job")
        + of_kind(render(agent, AGENT_ALL_OPTIONS), "Deployment")
    )


def effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


# --- both charts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart_name", "values"),
    [
        ("control_plane", None),
        ("control_plane", CONTROL_PLANE_ALL_OPTIONS),
        ("control_plane", {"auth": {"enabled": False}, "connections": {"replicas": 2}}),
        ("control_plane", CONTROL_PLANE_ENDPOINT),
        ("control_plane", CONTROL_PLANE_KNOBS),
        ("control_plane", CONTROL_PLANE_CONSOLE),
        ("agent", AGENT_REQUIRED),
        ("agent", AGENT_ALL_OPTIONS),
        ("agent", {**AGENT_REQUIRED, "networkPolicy": {"enabled": False}}),
        ("agent", AGENT_SIDECAR),
        ("agent", AGENT_KNOBS),
    ],
    ids=[
        "cp-defaults",
        "cp-all-options",
        "cp-mixed",
        "cp-endpoint",
        "cp-knobs",
        "cp-console",
        "agent-min",
        "agent-all",
        "agent-no-np",
        "agent-sidecar",
        "agent-knobs",
    ],
)
def test_rendered_objects_pass_strict_kubernetes_validation(
    request: pytest.FixtureRequest, chart_name: str, values: dict[str, Any] | None
) -> None:
    """Every rendered object validates against the Kubernetes 1.31 schema in strict mode."""
    objects = render(request.getfixturevalue(chart_name), values)
    assert objects
    # Gateway API kinds are CRDs kubernetes-validate has no schema for; tests/test_k8s_routing.py
    # checks them against their v1 fields.
    for obj in (o for o in objects if not o["apiVersion"].startswith(GATEWAY_API_GROUP)):
        assert kubernetes_validate.validate(obj, KUBE_VERSION, strict=True) == KUBE_VERSION


@pytest.mark.parametrize(
    ("path", "values"),
    [
        (CONTROL_PLANE, None),
        (CONTROL_PLANE, CONTROL_PLANE_ENDPOINT),
        (CONTROL_PLANE, CONTROL_PLANE_KNOBS),
        (CONTROL_PLANE, CONTROL_PLANE_CONSOLE),
        (AGENT, AGENT_REQUIRED),
        (AGENT, AGENT_KNOBS),
    ],
    ids=[
        "control-plane",
        "control-plane-endpoint",
        "control-plane-knobs",
        "control-plane-console",
        "agent",
        "agent-knobs",
    ],
)
def test_chart_passes_helm_lint_strict(path: Path, values: dict[str, Any] | None) -> None:
    """`helm lint --strict` for Kubernetes 1.31 finds no warning and no error."""
    report = helm.lint(path, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("path", [CONTROL_PLANE, AGENT], ids=["control-plane", "agent"])
def test_default_values_satisfy_the_schema(path: Path) -> None:
    """The chart's own values.yaml validates against its values.schema.json."""
    schema = json.loads((path / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((path / "values.yaml").read_text()))


BAD_VALUES = [
    ("control_plane", {"auth": {"replicas": "two"}}, "replicas"),
    ("control_plane", {"orchestrator": {"port": 70000}}, "port"),
    ("control_plane", {"orchestrator": {"port": 443}}, "port"),
    ("control_plane", {"global": {"logLevel": "verbose"}}, "logLevel"),
    ("control_plane", {"connections": {"replicsa": 2}}, "replicsa"),
    ("control_plane", {"global": {"database": {"existingSecret": "Bad_Name"}}}, "existingSecret"),
    (
        "control_plane",
        {"auth": {"extraEnv": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
        "valueFrom",
    ),
    ("control_plane", {"connections": {"keyring": {"existingSecret": None}}}, "existingSecret"),
    ("control_plane", {"connections": {"keyring": {"existingSecret": "Bad_Name"}}}, "keyring"),
    ("control_plane", {"connections": {"keyring": {"secretName": "k"}}}, "secretName"),
    ("control_plane", {"auth": {"keyring": {"existingSecret": "k", "key": "k"}}}, "keyring"),
    ("control_plane", {"global": {"tls": {"caSecret": "Corp_CA"}}}, "caSecret"),
    ("control_plane", {"global": {"tls": {"caKey": "ca/crt"}}}, "caKey"),
    ("control_plane", {"global": {"temporal": {"tls": "true"}}}, "tls"),
    ("control_plane", {"global": {"temporal": {"legacyNamespace": ""}}}, "legacyNamespace"),
    ("control_plane", {"global": {"temporal": {"namespace": "x"}}}, "namespace"),
    ("control_plane", {"global": {"serviceToken": {"existingSecret": None}}}, "existingSecret"),
    ("control_plane", {"auth": {"jwksPort": 0}}, "jwksPort"),
    (
        "control_plane",
        {"global": {"temporal": {"authorization": {"refreshIntervalSeconds": 1}}}},
        "refreshIntervalSeconds",
    ),
    ("control_plane", {"orchestrator": {"credentialTestTimeoutSeconds": 4}}, "credentialTest"),
    ("control_plane", {"orchestrator": {"credentialTestTimeoutSeconds": 601}}, "credentialTest"),
    ("control_plane", {"orchestrator": {"keyring": {"existingSecret": "Bad_Name"}}}, "keyring"),
    ("control_plane", {"connections": {"credentialTestTimeoutSeconds": 60}}, "credentialTest"),
    ("control_plane", {"migrations": {"lockTimeoutSeconds": 0}}, "lockTimeoutSeconds"),
    ("control_plane", {"migrations": {"backoffLimit": "3"}}, "backoffLimit"),
    ("control_plane", {"migrations": {"database": {"existingSecret": "Bad_Name"}}}, "database"),
    ("control_plane", {"migrations": {"image": "x"}}, "image"),
    ("control_plane", {"auth": {"retiredKeks": {"existingSecret": "Bad_Name"}}}, "retiredKeks"),
    ("control_plane", {"auth": {"retiredKeks": {"secret": "x"}}}, "retiredKeks"),
    ("control_plane", {"rewrap": {"enabled": "yes"}}, "enabled"),
    ("control_plane", {"rewrap": {"batchSize": 0}}, "batchSize"),
    ("control_plane", {"rewrap": {"batchSize": 10001}}, "batchSize"),
    ("control_plane", {"rewrap": {"backoffLimit": -1}}, "backoffLimit"),
    ("control_plane", {"rewrap": {"database": {"existingSecret": "x"}}}, "database"),
    ("control_plane", {"console": {"port": 443}}, "port"),
    ("control_plane", {"console": {"enabled": "yes"}}, "enabled"),
    ("control_plane", {"console": {"servicesEndpoint": "https://api.example"}}, "servicesEnd"),
    ("control_plane", {"console": {"host": "https://console.example"}}, "host"),
    ("control_plane", {"console": {"tls": {"existingSecret": "Bad_Name"}}}, "tls"),
    ("control_plane", {"console": {"healthPort": 8445}}, "healthPort"),
    ("control_plane", {"console": {"ingress": {"timeoutSeconds": 60}}}, "timeoutSeconds"),
    ("agent", {"replicas": "two"}, "replicas"),
    ("agent", {"controlPlane": {"host": "https://api.example"}}, "host"),
    ("agent", {"temporal": {"address": "temporal.example"}}, "address"),
    ("agent", {"caBundle": {"kind": "Volume"}}, "kind"),
    ("agent", {"extraEnv": [{"name": "X", "valueFrom": {"secretKeyRef": {}}}]}, "valueFrom"),
    ("agent", {"bearerCheckSeconds": 0}, "bearerCheckSeconds"),
    ("agent", {"fileRoots": ["data/lake"]}, "fileRoots"),
    ("agent", {"fileRoots": ["/a:/b"]}, "fileRoots"),
    ("agent", {"bearerCheckSeconds": 301}, "bearerCheckSeconds"),
    ("agent", {"temporal": {"serverName": "https://temporal.example"}}, "serverName"),
    ("agent", {"temporal": {"legacyNamespace": "a b"}}, "legacyNamespace"),
    ("agent", {"temporal": {"drainLegacy": "yes"}}, "drainLegacy"),
    ("agent", {"sidecar": {"format": "json"}}, "format"),
    ("agent", {"sidecar": {"ttl": "2 hours"}}, "ttl"),
    ("agent", {"sidecar": {"role": "Read-Only"}}, "role"),
    ("agent", {"sidecar": {"fileName": "../etc/passwd"}}, "fileName"),
    ("agent", {"sidecar": {"mountPath": "relative"}}, "mountPath"),
    ("agent", {"sidecar": {"graceSeconds": 3601}}, "graceSeconds"),
    ("agent", {"sidecar": {"containers": [{"name": "app"}]}}, "containers"),
    ("agent", {"sidecar": {"workloadToken": {"existingSecret": "Bad_Name"}}}, "workloadToken"),
    # The standard knobs: open to Kubernetes fields, typed where it matters.
    ("control_plane", {"auth": {"extraVolumes": [{"emptyDir": {}}]}}, "name"),
    ("control_plane", {"auth": {"extraContainers": [{"name": "x"}]}}, "image"),
    (
        "control_plane",
        {"auth": {"extraVolumeMounts": [{"name": "x", "mountPath": "rel"}]}},
        "mountPath",
    ),
    ("control_plane", {"auth": {"strategy": {"type": "BlueGreen"}}}, "type"),
    ("control_plane", {"auth": {"podAnnotations": {"a": 1}}}, "podAnnotations"),
    ("control_plane", {"auth": {"serviceAccount": {"name": "x"}}}, "serviceAccount"),
    ("control_plane", {"auth": {"service": {"type": "LoadBalancer"}}}, "service"),
    ("control_plane", {"networkPolicy": {"probeCidrs": ["10.0.0.0"]}}, "probeCidrs"),
    (
        "control_plane",
        {"networkPolicy": {"extraIngressFrom": [{"pods": {}}]}},
        "extraIngressFrom",
    ),
    ("control_plane", {"networkPolicy": {"databsae": {}}}, "databsae"),
    (
        "control_plane",
        {"auth": {"bootstrapToken": {"existingSecret": "Bad_Name"}}},
        "bootstrapToken",
    ),
    ("agent", {**AGENT_REQUIRED, "priorityClassName": "Not Valid"}, "priorityClassName"),
    (
        "agent",
        {**AGENT_REQUIRED, "topologySpreadConstraints": [{"maxSkew": 1}]},
        "topologySpreadConstraints",
    ),
]


@pytest.mark.parametrize(
    ("chart_name", "override", "where"), BAD_VALUES, ids=[f"{c}-{w}" for c, _, w in BAD_VALUES]
)
def test_schema_rejects_bad_values(
    request: pytest.FixtureRequest, chart_name: str, override: dict[str, Any], where: str
) -> None:
    """values.schema.json rejects a wrong type, range, enum, name or an unknown key."""
    chart: helm.Chart = request.getfixturevalue(chart_name)
    schema, merged = chart.schema, chart.merge_values(override)
    assert schema is not None
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.Draft7Validator(schema).validate(merged)
    # The offending key is in the error's path, or in its message for an unknown key; an
    # allOf failure carries the branch's own errors as its context.
    failures = [caught.value, *caught.value.context]
    assert any(where in "/".join(map(str, e.absolute_path)) or where in e.message for e in failures)


def test_helm_refuses_to_render_values_the_schema_rejects(control_plane: helm.Chart) -> None:
    """Helm itself checks the schema: replicas "two" fails the render, naming the key."""
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        render(control_plane, {"auth": {"replicas": "two"}})


RESTRICTED: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]]] = [
    ("runAsNonRoot", lambda pod, c: effective(pod, c, "runAsNonRoot") is True),
    ("runAsUser 10001", lambda pod, c: effective(pod, c, "runAsUser") == 10001),
    (
        "seccomp RuntimeDefault",
        lambda pod, c: effective(pod, c, "seccompProfile") == {"type": "RuntimeDefault"},
    ),
    (
        "readOnlyRootFilesystem",
        lambda pod, c: c["securityContext"].get("readOnlyRootFilesystem") is True,
    ),
    (
        "no privilege escalation",
        lambda pod, c: c["securityContext"].get("allowPrivilegeEscalation") is False,
    ),
    ("not privileged", lambda pod, c: c["securityContext"].get("privileged") is not True),
    (
        "capabilities drop ALL, add none",
        lambda pod, c: c["securityContext"].get("capabilities") == {"drop": ["ALL"]},
    ),
    ("no service-account token", lambda pod, c: pod.get("automountServiceAccountToken") is False),
    ("no host namespaces", lambda pod, c: not any(pod.get(k) for k in ("hostNetwork", "hostPID"))),
]


@pytest.mark.parametrize(("rule", "holds"), RESTRICTED, ids=[rule for rule, _ in RESTRICTED])
def test_every_container_runs_restricted(
    control_plane: helm.Chart,
    agent: helm.Chart,
    rule: str,
    holds: Callable[[dict[str, Any], dict[str, Any]], bool],
) -> None:
    """Each restricted-pod rule holds for every container of every Deployment."""
    deployments = all_deployments(control_plane, agent)
    # 3 services, the console and the agent; a migrate Job and a rewrap Job per service.
    assert len(deployments) == 5 + 3 + 3
    for deployment in deployments:
        pod = pod_spec(deployment)
        for container in pod["containers"] + pod.get("initContainers", []):
            assert holds(pod, container), f"{rule}: {deployment['metadata']['name']}"


def test_only_tmp_is_writable_and_it_is_an_empty_dir(
    control_plane: helm.Chart, agent: helm.Chart
) -> None:
    """Every volume mount is read-only except /tmp, which is an emptyDir."""
    for deployment in all_deployments(control_plane, agent):
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        mounts = only_container(deployment)["volumeMounts"]
        writable = [m for m in mounts if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp"]
        assert "emptyDir" in volumes[writable[0]["name"]]


def test_file_env_vars_name_files_in_read_only_secret_mounts(
    control_plane: helm.Chart, agent: helm.Chart
) -> None:
    """Each env value under /var/run/secrets/sevvo/ is a file a read-only volume projects."""
    checked = 0
    for deployment in all_deployments(control_plane, agent):
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        container = only_container(deployment)
        for name, value in env_of(container).items():
            if not value.startswith(SECRETS_DIR):
                continue
            directory, _, filename = value.rpartition("/")
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
            assert mount["readOnly"] is True, name
            volume = volumes[mount["name"]]
            source = volume.get("secret") or volume["configMap"]
            assert filename in [item["path"] for item in source["items"]], name
            checked += 1
    # Database URL, TLS cert and key per service, auth's KEK and retired KEKs, the keyrings of
    # connections and orchestrator, the CA bundle of all three services (auth calls the
    # orchestrator), the service token of auth and orchestrator, and the agent's token, mTLS
    # cert and key and CA bundle; the migration role's database URL in each migrate Job; and
    # the database URL and keyring (auth: KEK and retired KEKs) in each rewrap Job; the
    # console's TLS cert and key and CA bundle.
    assert checked == 3 * 3 + 2 + 2 + 3 + 2 + 4 + 3 + 2 * 2 + 3 + 3


SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "KEK", "DATABASE_URL", "DSN", "CERT")


def test_no_secret_value_is_passed_in_env(control_plane: helm.Chart, agent: helm.Chart) -> None:
    """Secret-looking env vars carry file paths only; no env comes from a Secret directly."""
    for deployment in all_deployments(control_plane, agent):
        container = only_container(deployment)
        assert "envFrom" not in container
        for entry in container["env"]:
            assert "secretKeyRef" not in entry.get("valueFrom", {}), entry["name"]
            if any(word in entry["name"] for word in SECRET_NAME_WORDS):
                assert entry["value"].startswith(SECRETS_DIR), entry["name"]


# --- control plane --------------------------------------------------------------------------


def test_control_plane_defaults_render_each_component_once(control_plane: helm.Chart) -> None:
    """Defaults give each component a Deployment, a Service and a ServiceAccount, no PDB."""
    objects = render(control_plane)
    for kind in ("Deployment", "Service", "ServiceAccount"):
        assert sorted(component(obj) for obj in of_kind(objects, kind)) == sorted(COMPONENTS)
    assert of_kind(objects, "PodDisruptionBudget") == []


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_component_runs_its_own_service_module(control_plane: helm.Chart, name: str) -> None:
    """The container command is `python -m services.<component> serve`."""
    container = only_container(deployment_for(render(control_plane), name))
    assert container["command"] == ["python", "-m", f"services.{name}", "serve"]
    assert container["image"] == "registry.example.com/sevvo/sevvo-control-plane:0.1.0"


@pytest.mark.parametrize("name", COMPONENTS)
def test_service_routes_grpc_8443_to_its_own_pods(control_plane: helm.Chart, name: str) -> None:
    """Each Service exposes 8443 to the named container port of its component's pods only
    (and auth's, its JWKS on 8081 for Temporal)."""
    objects = render(control_plane)
    (service,) = [s for s in of_kind(objects, "Service") if component(s) == name]
    deployment = deployment_for(objects, name)
    jwks = [{"name": "jwks", "port": 8081, "targetPort": "jwks", "protocol": "TCP"}]
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": 8443, "targetPort": "grpc", "protocol": "TCP"},
        *(jwks if name == "auth" else []),
    ]
    assert only_container(deployment)["ports"] == [
        {"name": "grpc", "containerPort": 8443, "protocol": "TCP"},
        {"name": "health", "containerPort": 8444, "protocol": "TCP"},
        *([{"name": "jwks", "containerPort": 8081, "protocol": "TCP"}] if name == "auth" else []),
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"][COMPONENT_LABEL] == name


def test_probes_ask_grpc_health_on_the_plaintext_health_port(control_plane: helm.Chart) -> None:
    """Startup, readiness and liveness are native grpc probes on the plaintext health port the
    service is told to open (SEVVO_HEALTH_PORT); readiness asks for the server's status (""),
    startup and liveness for sevvo.liveness, which a database outage does not fail. On
    SIGTERM the service drains before it stops accepting calls."""
    for name in COMPONENTS:
        container = only_container(deployment_for(render(control_plane), name))
        assert env_of(container)["SEVVO_HEALTH_PORT"] == "8444"
        # NOT_SERVING first, then 5 s of serving while endpoints catch up, then 5 s of grace.
        assert env_of(container)["SEVVO_SHUTDOWN_DRAIN_SECONDS"] == "5"
        assert container["readinessProbe"]["grpc"] == {"port": 8444}, name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": 8444, "service": LIVENESS}, (name, probe)


def test_health_port_follows_its_value_and_stays_out_of_the_service(
    control_plane: helm.Chart,
) -> None:
    """A custom healthPort moves the container port, the env and the probes together, and
    the Service still exposes only the TLS port (and auth's JWKS)."""
    objects = render(control_plane, {"connections": {"healthPort": 9000}})
    container = only_container(deployment_for(objects, "connections"))
    assert env_of(container)["SEVVO_HEALTH_PORT"] == "9000"
    assert {"name": "health", "containerPort": 9000, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 9000
    for service in of_kind(objects, "Service"):
        assert "health" not in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("name", COMPONENTS)
def test_replicas_above_one_add_a_disruption_budget(control_plane: helm.Chart, name: str) -> None:
    """replicas: 2 adds a PodDisruptionBudget selecting exactly that component's pods."""
    objects = render(control_plane, {name: {"replicas": 2}})
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    deployment = deployment_for(objects, name)
    assert deployment["spec"]["replicas"] == 2
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", COMPONENTS)
def test_disabled_component_renders_no_objects(control_plane: helm.Chart, name: str) -> None:
    """enabled: false removes every object of that component and keeps the others."""
    objects = render(control_plane, {name: {"enabled": False, "replicas": 3}})
    assert [obj for obj in objects if component(obj) == name] == []
    # The helm test pod ("test") checks whichever components are left; each left has its
    # migrate Job ("<name>-migrate").
    left = set(COMPONENTS) - {name}
    assert {component(obj) for obj in objects} - {"test"} == left | {f"{n}-migrate" for n in left}


def test_auth_alone_mounts_the_key_encryption_key(control_plane: helm.Chart) -> None:
    """Only auth gets SEVVO_AUTH_KEK_FILE and the KEK Secret, under the key it is told."""
    objects = render(control_plane, {"auth": {"kek": {"existingSecret": "k", "key": "v2"}}})
    for name in COMPONENTS:
        deployment = deployment_for(objects, name)
        kek = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "auth-kek"]
        has_env = "SEVVO_AUTH_KEK_FILE" in env_of(only_container(deployment))
        if name == "auth":
            assert has_env
            assert kek[0]["secret"]["secretName"] == "k"
            assert kek[0]["secret"]["items"] == [{"key": "v2", "path": "kek"}]
        else:
            assert not has_env
            assert kek == []


def test_auth_alone_gets_the_retired_keks_and_only_when_a_secret_is_named(
    control_plane: helm.Chart,
) -> None:
    """By default no retired-KEKs file is mounted; with auth.retiredKeks.existingSecret, auth
    alone gets SEVVO_AUTH_RETIRED_KEKS_FILE from a 0440 file of that Secret's key, read-only,
    and its Deployment still validates strictly on 1.28 and 1.37."""
    for name in COMPONENTS:
        deployment = deployment_for(render(control_plane), name)
        assert "SEVVO_AUTH_RETIRED_KEKS_FILE" not in env_of(only_container(deployment))
        assert "auth-retired-keks" not in [v["name"] for v in pod_spec(deployment)["volumes"]]
    objects = render(control_plane, RETIRED_KEKS)
    for name in COMPONENTS:
        deployment = deployment_for(objects, name)
        container = only_container(deployment)
        volumes = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "auth-retired-keks"]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "auth-retired-keks"]
        if name != "auth":
            assert "SEVVO_AUTH_RETIRED_KEKS_FILE" not in env_of(container)
            assert volumes == mounts == []
            continue
        path = env_of(container)["SEVVO_AUTH_RETIRED_KEKS_FILE"]
        assert path == "/var/run/secrets/sevvo/auth-retired-keks/keks"
        assert volumes[0]["secret"] == {
            "secretName": "sevvo-auth-retired-keks",
            "defaultMode": 0o440,
            "items": [{"key": "keks", "path": "keks"}],
        }
        assert mounts == [
            {
                "name": "auth-retired-keks",
                "mountPath": "/var/run/secrets/sevvo/auth-retired-keks",
                "readOnly": True,
            }
        ]
        for version in ("1.28", "1.37"):
            assert kubernetes_validate.validate(deployment, version, strict=True) == version


def test_connections_alone_mounts_its_keyring_read_only(control_plane: helm.Chart) -> None:
    """Only connections gets SEVVO_CONNECTIONS_KEYRING_FILE, a 0440 file from the keyring
    Secret and key it is told, in a read-only mount; auth and orchestrator get neither."""
    values = {"connections": {"keyring": {"existingSecret": "ring", "key": "v3.json"}}}
    objects = render(control_plane, values)
    for name in COMPONENTS:
        deployment = deployment_for(objects, name)
        container = only_container(deployment)
        volumes = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "connections-keyring"]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "connections-keyring"]
        env = env_of(container)
        if name == "connections":
            assert env["SEVVO_CONNECTIONS_KEYRING_FILE"] == KEYRING_FILE
            assert volumes[0]["secret"] == {
                "secretName": "ring",
                "defaultMode": MODE_0440,
                "items": [{"key": "v3.json", "path": "keyring.json"}],
            }
            directory, _, filename = KEYRING_FILE.rpartition("/")
            assert mounts == [
                {"name": "connections-keyring", "mountPath": directory, "readOnly": True}
            ]
            # The env names the very file the Secret volume projects.
            assert filename == volumes[0]["secret"]["items"][0]["path"]
        else:
            assert "SEVVO_CONNECTIONS_KEYRING_FILE" not in env
            assert volumes == []
            assert mounts == []


def test_keyring_defaults_to_the_documented_secret(control_plane: helm.Chart) -> None:
    """By default the keyring comes from Secret sevvo-connections-keyring, key keyring.json."""
    (volume,) = [
        v
        for v in pod_spec(deployment_for(render(control_plane), "connections"))["volumes"]
        if v["name"] == "connections-keyring"
    ]
    assert volume["secret"]["secretName"] == "sevvo-connections-keyring"
    assert volume["secret"]["items"] == [{"key": "keyring.json", "path": "keyring.json"}]


def test_helm_refuses_a_keyring_without_its_secret(control_plane: helm.Chart) -> None:
    """A keyring block with no existingSecret fails the render instead of mounting nothing."""
    with pytest.raises(helm.HelmValuesError, match="existingSecret"):
        render(control_plane, {"connections": {"keyring": {"existingSecret": None}}})


def test_orchestrator_alone_mounts_its_keyring_read_only(control_plane: helm.Chart) -> None:
    """Only the orchestrator gets SEVVO_ORCHESTRATOR_KEYRING_FILE, a 0440 file from the keyring
    Secret and key it is told, in a read-only mount; auth and connections get neither."""
    values = {"orchestrator": {"keyring": {"existingSecret": "orch-ring", "key": "v4.json"}}}
    objects = render(control_plane, values)
    for name in COMPONENTS:
        deployment = deployment_for(objects, name)
        container = only_container(deployment)
        volumes = [
            v for v in pod_spec(deployment)["volumes"] if v["name"] == "orchestrator-keyring"
        ]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "orchestrator-keyring"]
        env = env_of(container)
        if name == "orchestrator":
            assert env["SEVVO_ORCHESTRATOR_KEYRING_FILE"] == ORCHESTRATOR_KEYRING_FILE
            assert "SEVVO_CONNECTIONS_KEYRING_FILE" not in env
            assert volumes[0]["secret"] == {
                "secretName": "orch-ring",
                "defaultMode": MODE_0440,
                "items": [{"key": "v4.json", "path": "keyring.json"}],
            }
            directory, _, filename = ORCHESTRATOR_KEYRING_FILE.rpartition("/")
            assert mounts == [
                {"name": "orchestrator-keyring", "mountPath": directory, "readOnly": True}
            ]
            assert filename == volumes[0]["secret"]["items"][0]["path"]
        else:
            assert "SEVVO_ORCHESTRATOR_KEYRING_FILE" not in env
            assert volumes == []
            assert mounts == []


def test_orchestrator_keyring_defaults_to_the_documented_secret(control_plane: helm.Chart) -> None:
    """By default the orchestrator keyring is Secret sevvo-orchestrator-keyring, keyring.json."""
    (volume,) = [
        v
        for v in pod_spec(deployment_for(render(control_plane), "orchestrator"))["volumes"]
        if v["name"] == "orchestrator-keyring"
    ]
    assert volume["secret"]["secretName"] == "sevvo-orchestrator-keyring"
    assert volume["secret"]["items"] == [{"key": "keyring.json", "path": "keyring.json"}]


def test_helm_refuses_an_orchestrator_keyring_without_its_secret(
    control_plane: helm.Chart,
) -> None:
    """An orchestrator keyring with no existingSecret fails the render."""
    with pytest.raises(helm.HelmValuesError, match="existingSecret"):
        render(control_plane, {"orchestrator": {"keyring": {"existingSecret": None}}})


def test_orchestrator_defaults_for_temporal_and_credential_tests(
    control_plane: helm.Chart,
) -> None:
    """By default the orchestrator drains the old shared namespace default, registers org
    namespaces with 3 days' retention, dials Temporal without TLS, and gives a credential test
    60 seconds."""
    env = env_of(only_container(deployment_for(render(control_plane), "orchestrator")))
    assert env["SEVVO_TEMPORAL_ADDRESS"] == "temporal-frontend.temporal.svc:7233"
    assert env["SEVVO_TEMPORAL_LEGACY_NAMESPACE"] == "default"
    assert env["SEVVO_TEMPORAL_DRAIN_LEGACY"] == "true"
    assert env["SEVVO_TEMPORAL_RETENTION_DAYS"] == "3"
    assert env["SEVVO_TEMPORAL_TLS"] == "false"
    assert env["SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS"] == "60"
    assert env["SEVVO_DATABASE_URL_FILE"] == "/var/run/secrets/sevvo/database/url"
    assert env["SEVVO_TLS_CERT_FILE"] == "/var/run/secrets/sevvo/tls/tls.crt"
    assert env["SEVVO_TLS_KEY_FILE"] == "/var/run/secrets/sevvo/tls/tls.key"
    assert "SEVVO_CA_FILE" not in env


def test_orchestrator_temporal_tls_trusts_the_ca_bundle(control_plane: helm.Chart) -> None:
    """global.temporal.tls and legacyNamespace and the test timeout reach the orchestrator; with
    TLS on and a CA Secret set, SEVVO_CA_FILE names the CA Temporal is verified against."""
    values = {
        "global": {
            "temporal": {"legacyNamespace": "sevvo-prod", "tls": True},
            "tls": {"caSecret": "corp-ca"},
        },
        "orchestrator": {"credentialTestTimeoutSeconds": 120},
    }
    env = env_of(only_container(deployment_for(render(control_plane, values), "orchestrator")))
    assert env["SEVVO_TEMPORAL_LEGACY_NAMESPACE"] == "sevvo-prod"
    assert env["SEVVO_TEMPORAL_TLS"] == "true"
    assert env["SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS"] == "120"
    assert env["SEVVO_CA_FILE"] == CA_FILE
    (service,) = [
        s
        for s in of_kind(render(control_plane, values), "Service")
        if component(s) == "connections"
    ]
    assert env["SEVVO_CONNECTIONS_ENDPOINT"] == (
        f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )


@pytest.mark.parametrize("orchestrator_enabled", [True, False], ids=["orch-on", "orch-off"])
def test_connections_and_auth_call_the_orchestrator_only_when_enabled(
    control_plane: helm.Chart, orchestrator_enabled: bool
) -> None:
    """connections (credential tests) and auth (payload key rotation on revocation) get
    SEVVO_ORCHESTRATOR_ENDPOINT naming the orchestrator's Service and port exactly when the
    orchestrator is enabled; the orchestrator itself never gets it."""
    values = {"orchestrator": {"enabled": orchestrator_enabled, "port": 9444}}
    objects = render(control_plane, values)
    callers = ("connections", "auth")
    for name in callers:
        env = env_of(only_container(deployment_for(objects, name)))
        if orchestrator_enabled:
            (service,) = [s for s in of_kind(objects, "Service") if component(s) == "orchestrator"]
            assert env["SEVVO_ORCHESTRATOR_ENDPOINT"] == f"{service['metadata']['name']}:9444"
            assert service["spec"]["ports"][0]["port"] == 9444
        else:
            assert "SEVVO_ORCHESTRATOR_ENDPOINT" not in env
    for deployment in of_kind(objects, "Deployment"):
        if component(deployment) not in callers:
            assert "SEVVO_ORCHESTRATOR_ENDPOINT" not in env_of(only_container(deployment))


@pytest.mark.parametrize("orchestrator_enabled", [True, False], ids=["orch-on", "orch-off"])
@pytest.mark.parametrize("auth_enabled", [True, False], ids=["auth-on", "auth-off"])
@pytest.mark.parametrize("ca_secret", ["", "corp-ca"], ids=["no-ca", "ca"])
def test_ca_bundle_only_when_set_and_only_for_callers_of_other_services(
    control_plane: helm.Chart, ca_secret: str, auth_enabled: bool, orchestrator_enabled: bool
) -> None:
    """SEVVO_CA_FILE and its read-only 0440 mount exist exactly when global.tls.caSecret is
    set, on connections and orchestrator, and on auth only when it has an orchestrator to
    call (payload key rotation on revocation)."""
    values = {
        "global": {"tls": {"caSecret": ca_secret, "caKey": "bundle.pem"}},
        "auth": {"enabled": auth_enabled},
        "orchestrator": {"enabled": orchestrator_enabled},
    }
    objects = render(control_plane, values)
    for name in COMPONENTS:
        if (name == "auth" and not auth_enabled) or (
            name == "orchestrator" and not orchestrator_enabled
        ):
            continue
        deployment = deployment_for(objects, name)
        container = only_container(deployment)
        volumes = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "ca"]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "ca"]
        env = env_of(container)
        if ca_secret and (name != "auth" or orchestrator_enabled):
            assert env["SEVVO_CA_FILE"] == CA_FILE
            assert volumes[0]["secret"] == {
                "secretName": "corp-ca",
                "defaultMode": MODE_0440,
                "items": [{"key": "bundle.pem", "path": "ca.crt"}],
            }
            assert mounts == [
                {"name": "ca", "mountPath": CA_FILE.rpartition("/")[0], "readOnly": True}
            ]
        else:
            assert "SEVVO_CA_FILE" not in env, name
            assert volumes == [], name
            assert mounts == [], name


def test_database_url_comes_from_the_configured_secret_key(control_plane: helm.Chart) -> None:
    """global.database picks the Secret and key; the file is always named url."""
    values = {"global": {"database": {"existingSecret": "pg", "key": "dsn"}}}
    for name in COMPONENTS:
        deployment = deployment_for(render(control_plane, values), name)
        (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "database"]
        assert volume["secret"]["secretName"] == "pg"
        assert volume["secret"]["items"] == [{"key": "dsn", "path": "url"}]
        env = env_of(only_container(deployment))
        assert env["SEVVO_DATABASE_URL_FILE"] == "/var/run/secrets/sevvo/database/url"


def test_other_services_find_auth_through_its_service(control_plane: helm.Chart) -> None:
    """connections and orchestrator get SEVVO_AUTH_ENDPOINT naming auth's Service and port."""
    objects = render(control_plane, {"auth": {"port": 9443}})
    (auth_service,) = [s for s in of_kind(objects, "Service") if component(s) == "auth"]
    expected = f"{auth_service['metadata']['name']}:9443"
    for name in ("connections", "orchestrator"):
        env = env_of(only_container(deployment_for(objects, name)))
        assert env["SEVVO_AUTH_ENDPOINT"] == expected


def test_global_settings_reach_every_component(control_plane: helm.Chart) -> None:
    """Log level and image tag from global apply to all three services; the Temporal
    settings reach the orchestrator, the only one that talks to Temporal."""
    values = {
        "global": {
            "logLevel": "debug",
            "temporal": {"address": "temporal.internal:7233"},
            "image": {"tag": "9.9.9", "pullPolicy": "Always"},
        }
    }
    for name in COMPONENTS:
        container = only_container(deployment_for(render(control_plane, values), name))
        env = env_of(container)
        assert env["SEVVO_LOG_LEVEL"] == "debug"
        if name == "orchestrator":
            assert env["SEVVO_TEMPORAL_ADDRESS"] == "temporal.internal:7233"
        else:
            assert not {k for k in env if k.startswith("SEVVO_TEMPORAL_")}, name
        assert container["image"].endswith(":9.9.9")
        assert container["imagePullPolicy"] == "Always"


# --- agent ----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["controlPlane.host", "temporal.address"])
def test_agent_refuses_to_render_without_its_endpoints(agent: helm.Chart, missing: str) -> None:
    """Leaving the control-plane host or the Temporal address empty fails, naming the key."""
    section, key = missing.split(".")
    values = {k: dict(v) for k, v in AGENT_REQUIRED.items()}
    values[section][key] = ""
    with pytest.raises(helm.HelmRenderError, match=missing.replace(".", r"\.")):
        render(agent, values)


def test_agent_renders_no_service_and_listens_on_nothing(agent: helm.Chart) -> None:
    """The agent chart is a Deployment, a NetworkPolicy and a ServiceAccount; no ports."""
    objects = render(agent, AGENT_ALL_OPTIONS)
    assert sorted(obj["kind"] for obj in objects) == [
        "Deployment",
        "NetworkPolicy",
        "ServiceAccount",
    ]
    (deployment,) = of_kind(objects, "Deployment")
    assert "ports" not in only_container(deployment)


@pytest.mark.parametrize("values", [AGENT_REQUIRED, AGENT_SIDECAR], ids=["agent", "sidecar"])
def test_agent_liveness_probe_runs_the_liveness_checker(
    agent: helm.Chart, values: dict[str, Any]
) -> None:
    """The agent, alone or as a sidecar, has an exec liveness probe running
    `python -m agent.liveness` (it listens on nothing a network probe could dial)."""
    (deployment,) = of_kind(render(agent, values), "Deployment")
    pod = pod_spec(deployment)
    (container,) = [
        c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "agent"
    ]
    probe = container["livenessProbe"]
    assert probe["exec"]["command"] == ["python", "-m", "agent.liveness"]
    # Three misses a period apart outlast the checker's 30 s default max age.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30


DIGEST = "sha256:" + "ab" * 32


def test_images_are_the_two_built_ones_and_pin_by_digest(
    control_plane: helm.Chart, agent: helm.Chart
) -> None:
    """Each chart defaults to its own image (make images) and pulls by digest when given one."""
    (deployment,) = of_kind(render(agent, AGENT_REQUIRED), "Deployment")
    assert only_container(deployment)["image"] == "registry.example.com/sevvo/sevvo-agent:0.1.0"
    pinned = {**AGENT_REQUIRED, "image": {"digest": DIGEST}}
    (deployment,) = of_kind(render(agent, pinned), "Deployment")
    assert only_container(deployment)["image"] == f"registry.example.com/sevvo/sevvo-agent@{DIGEST}"
    objects = render(control_plane, {"global": {"image": {"digest": DIGEST}}})
    for name in COMPONENTS:
        image = only_container(deployment_for(objects, name))["image"]
        assert image == f"registry.example.com/sevvo/sevvo-control-plane@{DIGEST}"


def test_agent_runs_python_m_agent_with_its_endpoints(agent: helm.Chart) -> None:
    """The agent runs `python -m agent`; the control-plane endpoint defaults to port 443."""
    (deployment,) = of_kind(render(agent, AGENT_REQUIRED), "Deployment")
    container = only_container(deployment)
    env = env_of(container)
    assert container["command"] == ["python", "-m", "agent"]
    assert env["SEVVO_CONTROL_PLANE_ENDPOINT"] == "api.sevvo.example:443"
    assert env["SEVVO_TEMPORAL_ADDRESS"] == "temporal.sevvo.example:443"
    assert env["SEVVO_DEPLOYMENT_TOKEN_FILE"] == "/var/run/secrets/sevvo/deployment-token/token"


@pytest.mark.parametrize("enabled", [False, True])
def test_agent_temporal_client_certificate_is_optional(agent: helm.Chart, enabled: bool) -> None:
    """temporal.clientTls.enabled toggles the mTLS cert/key files and their env vars."""
    values = {**AGENT_REQUIRED, "temporal": {**AGENT_REQUIRED["temporal"]}}
    values["temporal"]["clientTls"] = {"enabled": enabled, "existingSecret": "mtls"}
    (deployment,) = of_kind(render(agent, values), "Deployment")
    env = env_of(only_container(deployment))
    volumes = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "temporal-tls"]
    if enabled:
        assert env["SEVVO_TEMPORAL_TLS_CERT"] == "/var/run/secrets/sevvo/temporal-tls/tls.crt"
        assert env["SEVVO_TEMPORAL_TLS_KEY"] == "/var/run/secrets/sevvo/temporal-tls/tls.key"
        assert volumes[0]["secret"]["secretName"] == "mtls"
    else:
        assert not {"SEVVO_TEMPORAL_TLS_CERT", "SEVVO_TEMPORAL_TLS_KEY"} & env.keys()
        assert volumes == []


@pytest.mark.parametrize(("kind", "source"), [("ConfigMap", "configMap"), ("Secret", "secret")])
def test_agent_ca_bundle_comes_from_a_configmap_or_secret(
    agent: helm.Chart, kind: str, source: str
) -> None:
    """caBundle mounts the named ConfigMap or Secret key as ca.crt."""
    values = {**AGENT_REQUIRED, "caBundle": {"enabled": True, "kind": kind, "name": "corp-ca"}}
    (deployment,) = of_kind(render(agent, values), "Deployment")
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "ca-bundle"]
    ref = volume[source]
    assert ref.get("name", ref.get("secretName")) == "corp-ca"
    assert ref["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    env = env_of(only_container(deployment))
    assert env["SEVVO_CA_FILE"] == CA_FILE
    assert "SEVVO_CA_BUNDLE_FILE" not in env


def test_agent_temporal_and_bearer_defaults(agent: helm.Chart) -> None:
    """By default the agent also drains the old shared namespace default, checks its bearer
    every 15 seconds, sets no TLS server name override and no CA file."""
    (deployment,) = of_kind(render(agent, AGENT_REQUIRED), "Deployment")
    env = env_of(only_container(deployment))
    assert env["SEVVO_TEMPORAL_LEGACY_NAMESPACE"] == "default"
    assert env["SEVVO_TEMPORAL_DRAIN_LEGACY"] == "true"
    assert env["SEVVO_BEARER_CHECK_SECONDS"] == "15"
    assert not {"SEVVO_TEMPORAL_SERVER_NAME", "SEVVO_CA_FILE", "SEVVO_CA_BUNDLE_FILE"} & env.keys()


def test_agent_temporal_settings_reach_the_agent(agent: helm.Chart) -> None:
    """temporal.legacyNamespace, drainLegacy, serverName and bearerCheckSeconds become its
    env."""
    values = {
        **AGENT_REQUIRED,
        "temporal": {
            **AGENT_REQUIRED["temporal"],
            "legacyNamespace": "acme",
            "drainLegacy": False,
            "serverName": "temporal.internal.example",
        },
        "bearerCheckSeconds": 30,
    }
    (deployment,) = of_kind(render(agent, values), "Deployment")
    env = env_of(only_container(deployment))
    assert env["SEVVO_TEMPORAL_LEGACY_NAMESPACE"] == "acme"
    assert env["SEVVO_TEMPORAL_DRAIN_LEGACY"] == "false"
    assert env["SEVVO_TEMPORAL_SERVER_NAME"] == "temporal.internal.example"
    assert env["SEVVO_BEARER_CHECK_SECONDS"] == "30"


def egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (port["protocol"], port["port"])
        for rule in policy["spec"]["egress"]
        for port in rule["ports"]
    }


def test_agent_network_policy_denies_all_ingress(agent: helm.Chart) -> None:
    """The NetworkPolicy selects the agent pods, enforces Ingress, and allows none."""
    objects = render(agent, AGENT_REQUIRED)
    (policy,) = of_kind(objects, "NetworkPolicy")
    (deployment,) = of_kind(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"].get("ingress", []) == []


def test_agent_network_policy_allows_egress_only_to_443_and_dns(agent: helm.Chart) -> None:
    """By default egress is open to TCP 443 and DNS (UDP and TCP 53), nothing else."""
    (policy,) = of_kind(render(agent, AGENT_REQUIRED), "NetworkPolicy")
    assert egress_ports(policy) == {("TCP", 443), ("UDP", 53), ("TCP", 53)}


def test_agent_network_policy_follows_a_non_default_temporal_port(agent: helm.Chart) -> None:
    """A Temporal frontend on 7233 opens TCP 7233 as well, so the policy never blocks it."""
    values = {**AGENT_REQUIRED, "temporal": {"address": "temporal.sevvo.example:7233"}}
    (policy,) = of_kind(render(agent, values), "NetworkPolicy")
    assert egress_ports(policy) == {("TCP", 443), ("TCP", 7233), ("UDP", 53), ("TCP", 53)}


def test_agent_network_policy_appends_extra_egress_for_customer_databases(
    agent: helm.Chart,
) -> None:
    """networkPolicy.extraEgress rules are added after the built-in ones, unchanged."""
    rule = {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    values = {**AGENT_REQUIRED, "networkPolicy": {"enabled": True, "extraEgress": [rule]}}
    (policy,) = of_kind(render(agent, values), "NetworkPolicy")
    assert policy["spec"]["egress"][-1] == rule
    assert len(policy["spec"]["egress"]) == 3


# --- the charts and the code read the same variables ---------------------------------------

CONFIG_MODULES = {
    "auth": ROOT / "services" / "auth" / "config.py",
    "connections": ROOT / "services" / "connections" / "config.py",
    "orchestrator": ROOT / "services" / "orchestrator" / "config.py",
    "console": ROOT / "console" / "config.py",
    "agent": ROOT / "agent" / "config.py",
    # The migrate hook Jobs' container: MigrateConfig.
    "migrate": ROOT / "sevvo" / "runtime" / "migrations.py",
    # The rewrap hook Jobs' container: RewrapConfig, with its component's key variables.
    "rewrap": ROOT / "sevvo" / "runtime" / "rewrap.py",
}
RUNTIME_CONFIG = ROOT / "sevvo" / "runtime" / "config.py"
SEVVO_VARIABLE = re.compile(r"SEVVO_[A-Z_]+")
# Readers of VARIABLE or VARIABLE_FILE (sevvo.runtime.config, sevvo.runtime.sealing).
SECRET_READERS = {"secret", "required_secret", "load_keyring"}


def _called(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def variables_read_by(path: Path) -> set[str]:
    """Every SEVVO_* variable a config module can read: the names in its source, the _FILE
    variant of each secret it reads, and those of the shared readers it calls (log_level)."""
    source = path.read_text()
    tree = ast.parse(source)
    names = set(SEVVO_VARIABLE.findall(source))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }
    runtime_source = RUNTIME_CONFIG.read_text()
    runtime_functions = {
        node.name: ast.get_source_segment(runtime_source, node) or ""
        for node in ast.parse(runtime_source).body
        if isinstance(node, ast.FunctionDef)
    }
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        called = _called(call)
        if called in SECRET_READERS and len(call.args) >= 2:
            arg = call.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(f"{arg.value}_FILE")
            elif isinstance(arg, ast.Name) and arg.id in constants:
                names.add(f"{constants[arg.id]}_FILE")
        elif called in runtime_functions:
            names |= set(SEVVO_VARIABLE.findall(runtime_functions[called]))
    return names


def keyring_variable(name: str) -> str:
    """The keyring variable a component's config.py names (KEYRING_VARIABLE), which its
    rewrap command passes to RewrapConfig too."""
    tree = ast.parse(CONFIG_MODULES[name].read_text())
    (value,) = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id == "KEYRING_VARIABLE" for t in node.targets)
    ]
    return str(value)


def auth_kek_variables() -> set[str]:
    """What auth's load_key_encryption_keys reads (auth's rewrap command loads the KEKs with
    it): the names in its source and in the helpers it calls, with their _FILE variants."""
    source = CONFIG_MODULES["auth"].read_text()
    functions = {
        node.name: ast.get_source_segment(source, node) or ""
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
    }
    loader = functions["load_key_encryption_keys"]
    called = [functions[name] for name in functions if f"{name}(" in loader]
    names = set(SEVVO_VARIABLE.findall("".join([loader, *called])))
    return names | {f"{name}_FILE" for name in names if not name.endswith("_FILE")}


def variables_read_by_container(job_or_deployment: dict[str, Any]) -> set[str]:
    """What the process in an object's only container reads: a rewrap Job reads RewrapConfig's
    variables and its component's key variables (a keyring, or auth's KEKs)."""
    container = only_container(job_or_deployment)["name"]
    read = variables_read_by(CONFIG_MODULES[container])
    if container == "rewrap":
        name = component(job_or_deployment).removesuffix("-rewrap")
        if name == "auth":
            read |= auth_kek_variables()
        else:
            read.add(f"{keyring_variable(name)}_FILE")
    return read


def test_config_variables_are_parsed_from_the_code() -> None:
    """The parser finds what each config.py really reads, including the _FILE secrets and
    SEVVO_LOG_LEVEL, which only the shared reader names."""
    read = {name: variables_read_by(path) for name, path in CONFIG_MODULES.items()}
    assert {"SEVVO_DATABASE_URL_FILE", "SEVVO_AUTH_KEK_FILE", "SEVVO_LOG_LEVEL"} <= read["auth"]
    assert "SEVVO_CONNECTIONS_KEYRING_FILE" in read["connections"]
    assert "SEVVO_ORCHESTRATOR_ENDPOINT" in read["connections"]
    assert {"SEVVO_ORCHESTRATOR_KEYRING_FILE", "SEVVO_TEMPORAL_TLS"} <= read["orchestrator"]
    assert {"SEVVO_DEPLOYMENT_TOKEN_FILE", "SEVVO_CA_FILE", "SEVVO_LOG_LEVEL"} <= read["agent"]
    assert "SEVVO_CA_BUNDLE_FILE" not in read["agent"]
    assert "SEVVO_TEMPORAL_ADDRESS" not in read["auth"] | read["connections"]
    assert {"SEVVO_DATABASE_URL_FILE", "SEVVO_LOG_LEVEL"} <= read["rewrap"]
    assert "SEVVO_TLS_KEY_FILE" not in read["rewrap"]
    assert keyring_variable("orchestrator") == "SEVVO_ORCHESTRATOR_KEYRING"
    assert {"SEVVO_AUTH_KEK_FILE", "SEVVO_AUTH_RETIRED_KEKS_FILE"} <= auth_kek_variables()
    assert "SEVVO_TLS_KEY_FILE" not in auth_kek_variables()


def without_extra_env(values: dict[str, Any]) -> dict[str, Any]:
    """The values with every extraEnv dropped: the drift check covers the chart's own env."""
    values = copy.deepcopy(values)
    values.pop("extraEnv", None)
    for name in (*COMPONENTS, "console"):
        values.get(name, {}).pop("extraEnv", None)
    return values


@pytest.mark.parametrize(
    ("chart_name", "values"),
    [
        ("control_plane", None),
        ("control_plane", without_extra_env(CONTROL_PLANE_ALL_OPTIONS)),
        ("control_plane", {"auth": {"enabled": False}, "orchestrator": {"enabled": False}}),
        (
            "control_plane",
            without_extra_env(
                {
                    **CONTROL_PLANE_CONSOLE,
                    "console": {**CONTROL_PLANE_CONSOLE["console"], "extraContainers": []},
                }
            ),
        ),
        ("agent", AGENT_REQUIRED),
        ("agent", without_extra_env(AGENT_ALL_OPTIONS)),
    ],
    ids=["cp-defaults", "cp-all-options", "cp-partial", "cp-console", "agent-min", "agent-all"],
)
def test_every_sevvo_variable_is_one_the_code_reads(
    request: pytest.FixtureRequest, chart_name: str, values: dict[str, Any] | None
) -> None:
    """For each rendered container, every SEVVO_* env name is read by its config.py, so the
    chart and the code cannot drift apart."""
    objects = render(request.getfixturevalue(chart_name), values)
    deployments = of_kind(objects, "Deployment")
    assert deployments
    for deployment in deployments + of_kind(objects, "Job"):
        container = only_container(deployment)
        read = variables_read_by_container(deployment)
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), container["name"]
        unread = {n for n in names if n.startswith("SEVVO_")} - read
        assert not unread, f"{container['name']} is given {sorted(unread)} but never reads them"


# --- the agent as a sidecar ---------------------------------------------------------------


def _sidecar_pod(agent: helm.Chart) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    objects = render(agent, AGENT_SIDECAR)
    assert of_kind(objects, "NetworkPolicy") == []  # The pod is the customer's service.
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == "reporting"
    return deployment, objects


def test_sidecar_renders_the_service_with_the_agent_as_a_native_sidecar(agent: helm.Chart) -> None:
    """The service's containers run beside the agent, which is an init container that keeps
    running (started before them, stopped after them) and is started once the file exists."""
    deployment, _ = _sidecar_pod(agent)
    pod = pod_spec(deployment)
    assert [c["name"] for c in pod["containers"]] == ["report", "api"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "agent"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["python", "-m", "agent"]
    probe = sidecar["startupProbe"]["exec"]["command"]
    assert probe[:2] == ["python", "-c"]
    assert "'/var/run/sevvo/db.pgpass'" in probe[2]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert labels[COMPONENT_LABEL] == "workload"
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()


def test_sidecar_agent_renders_the_credential_into_the_shared_memory_volume(
    agent: helm.Chart,
) -> None:
    """The agent serves its socket and writes the file in an in-memory emptyDir it alone may
    write; it reads the workload token from a read-only Secret file."""
    deployment, _ = _sidecar_pod(agent)
    pod = pod_spec(deployment)
    (sidecar,) = pod["initContainers"]
    env = env_of(sidecar)
    assert env["SEVVO_CREDENTIAL_SOCKET"] == "/var/run/sevvo/agent.sock"
    assert env["SEVVO_SIDECAR_CONNECTION"] == "reporting-db"
    assert env["SEVVO_SIDECAR_ROLE"] == "readonly"
    assert env["SEVVO_SIDECAR_TTL"] == "1h"
    assert env["SEVVO_SIDECAR_FILE"] == "/var/run/sevvo/db.pgpass"
    assert env["SEVVO_SIDECAR_FORMAT"] == "pgpass"
    assert env["SEVVO_SIDECAR_GRACE_SECONDS"] == "30"
    assert env["SEVVO_WORKLOAD_TOKEN_FILE"] == "/var/run/secrets/sevvo/workload-token/token"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["sevvo-shared"]["emptyDir"]["medium"] == "Memory"
    assert volumes["workload-token"]["secret"]["secretName"] == "sevvo-workload-token"
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert not mounts["/var/run/sevvo"].get("readOnly")
    assert mounts["/var/run/secrets/sevvo/workload-token"]["readOnly"] is True
    writable = sorted(p for p, m in mounts.items() if not m.get("readOnly"))
    assert writable == ["/tmp", "/var/run/sevvo"]


def test_sidecar_services_read_the_socket_and_file_read_only(agent: helm.Chart) -> None:
    """Each service container gets the shared directory and token read-only and the variables
    the client library and the service read; its own env and settings are kept."""
    deployment, _ = _sidecar_pod(agent)
    report, api = pod_spec(deployment)["containers"]
    for container in (report, api):
        env = env_of(container)
        assert env["SEVVO_AGENT_SOCKET"] == "/var/run/sevvo/agent.sock"
        assert env["SEVVO_WORKLOAD_TOKEN_FILE"] == "/var/run/secrets/sevvo/workload-token/token"
        assert env["SEVVO_CREDENTIAL_FILE"] == "/var/run/sevvo/db.pgpass"
        assert all(m["readOnly"] is True for m in container["volumeMounts"])
    assert env_of(report)["PGPASSFILE"] == "/var/run/sevvo/db.pgpass"
    assert api["securityContext"]["runAsUser"] == 10001


def test_sidecar_pod_runs_restricted(agent: helm.Chart) -> None:
    """Every restricted-pod rule holds for the agent and the service containers (a service
    without its own securityContext gets the restricted one)."""
    deployment, _ = _sidecar_pod(agent)
    pod = pod_spec(deployment)
    for rule, holds in RESTRICTED:
        for container in pod["containers"] + pod["initContainers"]:
            assert holds(pod, container), f"{rule}: {container['name']}"


def test_sidecar_without_a_connection_only_serves_the_socket(agent: helm.Chart) -> None:
    """With no connection the agent renders no file and holds no workload token; it is
    started once its socket listens."""
    values = {**AGENT_SIDECAR, "sidecar": {**AGENT_SIDECAR["sidecar"], "connection": ""}}
    (deployment,) = of_kind(render(agent, values), "Deployment")
    pod = pod_spec(deployment)
    (sidecar,) = pod["initContainers"]
    assert not [name for name in env_of(sidecar) if name.startswith("SEVVO_SIDECAR_")]
    assert "SEVVO_WORKLOAD_TOKEN_FILE" not in env_of(sidecar)
    assert "'/var/run/sevvo/agent.sock'" in sidecar["startupProbe"]["exec"]["command"][2]
    assert "SEVVO_CREDENTIAL_FILE" not in env_of(pod["containers"][0])
    assert env_of(pod["containers"][0])["SEVVO_AGENT_SOCKET"] == "/var/run/sevvo/agent.sock"


def test_sidecar_needs_the_services_containers(agent: helm.Chart) -> None:
    """sidecar.enabled without containers fails the render, saying what is missing."""
    values = {**AGENT_REQUIRED, "sidecar": {"enabled": True}}
    with pytest.raises(helm.HelmRenderError, match=r"sidecar\.containers is required"):
        render(agent, values)


# --- migrations -----------------------------------------------------------------------------


def test_each_component_migrates_in_a_pre_install_and_pre_upgrade_hook_job(
    control_plane: helm.Chart,
) -> None:
    """One hook Job per component runs its migrate command as the migration role; the
    Deployments then only check the schema."""
    objects = render(control_plane)
    jobs = of_kind(objects, "Job")
    assert sorted(component(job) for job in jobs) == sorted(f"{n}-migrate" for n in COMPONENTS)
    for job in jobs:
        name = component(job).removesuffix("-migrate")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        pod = pod_spec(job)
        assert pod["restartPolicy"] == "Never"
        # Hooks run before the chart's ServiceAccounts exist.
        assert "serviceAccountName" not in pod
        container = only_container(job)
        assert container["command"] == ["python", "-m", f"services.{name}", "migrate"]
        env = env_of(container)
        assert env["SEVVO_DATABASE_URL_FILE"] == "/var/run/secrets/sevvo/migrate-database/url"
        assert env["SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS"] == "5"
        # The Job holds the migration role's URL and nothing else secret: no TLS key, no KEK.
        secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert secrets == ["sevvo-database-migrate"]
        for version in ("1.28", "1.37"):
            assert kubernetes_validate.validate(job, version, strict=True) == version
    for deployment in of_kind(objects, "Deployment"):
        assert env_of(only_container(deployment))["SEVVO_MIGRATE_ON_START"] == "false"


def test_no_service_or_budget_selects_a_migrate_pod(control_plane: helm.Chart) -> None:
    """A running migrate or rewrap pod is never a Service endpoint nor counted by a
    disruption budget."""
    values: dict[str, Any] = {name: {"replicas": 2} for name in COMPONENTS}
    values["rewrap"] = {"enabled": True}
    objects = render(control_plane, values)
    selectors = [s["spec"]["selector"] for s in of_kind(objects, "Service")] + [
        p["spec"]["selector"]["matchLabels"] for p in of_kind(objects, "PodDisruptionBudget")
    ]
    assert len(selectors) >= 6
    for job in of_kind(objects, "Job"):
        labels = job["spec"]["template"]["metadata"]["labels"]
        for selector in selectors:
            assert not all(labels.get(k) == v for k, v in selector.items()), selector


def test_without_migrate_jobs_the_services_migrate_on_start(control_plane: helm.Chart) -> None:
    """migrations.enabled=false renders no Job and lets each service migrate itself."""
    objects = render(control_plane, {"migrations": {"enabled": False}})
    assert of_kind(objects, "Job") == []
    for deployment in of_kind(objects, "Deployment"):
        assert env_of(only_container(deployment))["SEVVO_MIGRATE_ON_START"] == "true"


def test_migrate_job_settings_follow_their_values(control_plane: helm.Chart) -> None:
    """The migration Secret, timeouts and retries come from values; a disabled component has
    no Job."""
    values = {
        "auth": {"enabled": False},
        "migrations": {
            "database": {"existingSecret": "pg-owner", "key": "dsn"},
            "lockTimeoutSeconds": 2.5,
            "statementTimeoutSeconds": 60,
            "backoffLimit": 1,
        },
    }
    jobs = of_kind(render(control_plane, values), "Job")
    assert sorted(component(job) for job in jobs) == ["connections-migrate", "orchestrator-migrate"]
    for job in jobs:
        assert job["spec"]["backoffLimit"] == 1
        env = env_of(only_container(job))
        assert env["SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS"] == "2.5"
        assert env["SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS"] == "60"
        (volume,) = [v for v in pod_spec(job)["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "pg-owner"
        assert volume["secret"]["items"] == [{"key": "dsn", "path": "url"}]


KEYRINGS = ("connections", "orchestrator")
REWRAP_ON: dict[str, Any] = {"rewrap": {"enabled": True}}
# auth's key Secrets, and their files as the rewrap Job's mounts project them.
AUTH_KEY_VOLUMES = {"auth-kek", "auth-retired-keks"}


def rewrap_jobs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rewrap Jobs by the component whose keyring they rewrap."""
    return {
        component(job).removesuffix("-rewrap"): job
        for job in of_kind(objects, "Job")
        if component(job).endswith("-rewrap")
    }


def test_no_rewrap_job_by_default(control_plane: helm.Chart) -> None:
    """Without rewrap.enabled the chart renders no rewrap Job."""
    assert rewrap_jobs(render(control_plane)) == {}


def test_each_keyring_is_rewrapped_in_a_post_install_and_post_upgrade_hook_job(
    control_plane: helm.Chart,
) -> None:
    """With rewrap.enabled, auth, connections and the orchestrator each get a hook Job after
    the release's objects that runs their rewrap command, mounting the Deployment's database
    and key Secrets (a keyring, or auth's KEK and retired KEKs) exactly as the Deployment does
    and no other Secret; it validates strictly at both ends of the supported Kubernetes
    range."""
    objects = render(control_plane, {**REWRAP_ON, **RETIRED_KEKS})
    jobs = rewrap_jobs(objects)
    assert sorted(jobs) == ["auth", *KEYRINGS]
    for name, job in jobs.items():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert job["spec"]["backoffLimit"] == 2
        pod = pod_spec(job)
        assert pod["restartPolicy"] == "Never"
        container = only_container(job)
        assert container["command"] == [
            *("python", "-m", f"services.{name}", "rewrap", "--batch-size", "200")
        ]
        served = pod_spec(deployment_for(objects, name))
        wanted = {"database", *(AUTH_KEY_VOLUMES if name == "auth" else {f"{name}-keyring"})}
        assert [v for v in pod["volumes"] if "secret" in v] == [
            v for v in served["volumes"] if v["name"] in wanted
        ]
        served_env = env_of(only_container(deployment_for(objects, name)))
        for variable, value in env_of(container).items():
            assert served_env[variable] == value, variable
        for version in ("1.28", "1.37"):
            assert kubernetes_validate.validate(job, version, strict=True) == version


def test_rewrap_job_gives_its_command_the_configuration_it_loads(
    control_plane: helm.Chart, tmp_path: Path
) -> None:
    """The Job's env and Secret files, laid out as its mounts project them, load into the
    rewrap command's own configuration (RewrapConfig) with the component's keyring, or auth's
    KEK with the retired ones."""
    keyring = Keyring.generate("k7")
    kek, retired = b"c" * 32, b"r" * 32
    contents = {
        "database": "postgresql://sevvo@db/sevvo",
        "keyring.json": keyring.to_json(),
        "kek": base64.b64encode(kek).decode(),
        "keks": base64.b64encode(retired).decode() + "\n",
    }
    for name, job in rewrap_jobs(render(control_plane, {**REWRAP_ON, **RETIRED_KEKS})).items():
        container = only_container(job)
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
        root = tmp_path / name
        for mount in container["volumeMounts"]:
            source = volumes[mount["name"]].get("secret")
            for item in source["items"] if source else []:
                path = root / mount["mountPath"].lstrip("/") / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(contents.get(item["path"], contents["database"]))
        env = {
            k: str(root / v.lstrip("/")) if v.startswith(SECRETS_DIR) else v
            for k, v in env_of(container).items()
        }
        config = RewrapConfig.load(env, KEK_SCHEME if name == "auth" else keyring_variable(name))
        assert config.database_url == contents["database"]
        wanted = (
            KEK_SCHEME.load(
                {"SEVVO_AUTH_KEK": contents["kek"], "SEVVO_AUTH_RETIRED_KEKS": contents["keks"]}
            )
            if name == "auth"
            else keyring
        )
        assert config.keyring.current() == wanted
        assert config.log_level == "INFO"


def test_rewrap_job_settings_follow_their_values(control_plane: helm.Chart) -> None:
    """Batch size, retries, deadline, the keyring Secret and auth's KEK Secrets come from
    values; a disabled component has no rewrap Job."""
    values = {
        "rewrap": {
            "enabled": True,
            "batchSize": 50,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 120,
        },
        "orchestrator": {"keyring": {"existingSecret": "orch-kr", "key": "ring"}},
        "auth": {
            "kek": {"existingSecret": "kek-v2", "key": "k"},
            "retiredKeks": {"existingSecret": "kek-v1", "key": "old"},
        },
        "connections": {"enabled": False},
    }
    jobs = rewrap_jobs(render(control_plane, values))
    assert sorted(jobs) == ["auth", "orchestrator"]
    auth = {v["name"]: v["secret"] for v in pod_spec(jobs["auth"])["volumes"] if "secret" in v}
    assert auth["auth-kek"]["secretName"] == "kek-v2"
    assert auth["auth-kek"]["items"] == [{"key": "k", "path": "kek"}]
    assert auth["auth-retired-keks"]["secretName"] == "kek-v1"
    assert auth["auth-retired-keks"]["items"] == [{"key": "old", "path": "keks"}]
    job = jobs["orchestrator"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert only_container(job)["command"][-2:] == ["--batch-size", "50"]
    (keyring,) = [v for v in pod_spec(job)["volumes"] if v["name"] == "orchestrator-keyring"]
    assert keyring["secret"]["secretName"] == "orch-kr"
    assert keyring["secret"]["items"] == [{"key": "ring", "path": "keyring.json"}]


# --- standard knobs, disruption budgets and topology spread --------------------------------


@pytest.mark.parametrize("version", ["1.28", "1.37"])
def test_knobs_validate_strictly_at_both_ends_of_the_supported_range(
    control_plane: helm.Chart, agent: helm.Chart, version: str
) -> None:
    """With replicas 2 and every knob set, both charts' objects (the helm test pod too)
    validate strictly against the oldest and newest Kubernetes the charts support."""
    objects = render(control_plane, CONTROL_PLANE_KNOBS) + render(agent, AGENT_KNOBS)
    assert {"Pod", "PodDisruptionBudget", "NetworkPolicy"} <= {o["kind"] for o in objects}
    for obj in (o for o in objects if not o["apiVersion"].startswith(GATEWAY_API_GROUP)):
        assert kubernetes_validate.validate(obj, version, strict=True) == version


@pytest.mark.parametrize("replicas", [1, 2])
def test_budget_and_spread_only_with_more_than_one_replica(
    control_plane: helm.Chart, replicas: int
) -> None:
    """replicas > 1 adds a PodDisruptionBudget and a zone and node spread that never blocks
    scheduling, both selecting the component's pods; one replica gets neither."""
    values = {name: {"replicas": replicas} for name in COMPONENTS}
    objects = render(control_plane, values)
    budgets = {component(b): b for b in of_kind(objects, "PodDisruptionBudget")}
    for name in COMPONENTS:
        pod = pod_spec(deployment_for(objects, name))
        if replicas == 1:
            assert name not in budgets
            assert "topologySpreadConstraints" not in pod
            continue
        selector = deployment_for(objects, name)["spec"]["selector"]
        assert budgets[name]["spec"]["selector"] == selector
        spread = pod["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == [
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        ]
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)
        assert all(c["labelSelector"] == selector for c in spread)


def test_own_topology_spread_replaces_the_default(control_plane: helm.Chart) -> None:
    """topologySpreadConstraints, when given, is used as is, even with one replica."""
    own = [{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]
    for replicas in (1, 3):
        objects = render(
            control_plane, {"auth": {"replicas": replicas, "topologySpreadConstraints": own}}
        )
        assert pod_spec(deployment_for(objects, "auth"))["topologySpreadConstraints"] == own


def _assert_knobs_applied(deployment: dict[str, Any], main: str) -> None:
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert deployment["spec"]["strategy"] == KNOBS["strategy"]
    assert template["metadata"]["annotations"] == KNOBS["podAnnotations"]
    assert template["metadata"]["labels"]["team"] == "data"
    # A pod label never overrides the chart's own: the selector would stop matching.
    assert (
        template["metadata"]["labels"].items()
        >= deployment["spec"]["selector"]["matchLabels"].items()
    )
    assert pod["priorityClassName"] == "sevvo-high"
    assert {"name": "extra", "emptyDir": {"sizeLimit": "1Mi"}} in pod["volumes"]
    (container,) = [
        c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == main
    ]
    assert KNOBS["extraVolumeMounts"][0] in container["volumeMounts"]
    assert [c["name"] for c in pod["containers"]][-1] == "proxy"


def test_control_plane_knobs_reach_each_component(control_plane: helm.Chart) -> None:
    """Pod annotations and labels, priority class, volumes and mounts, an extra container,
    the strategy, and ServiceAccount and Service annotations reach every component."""
    objects = render(control_plane, CONTROL_PLANE_KNOBS)
    for name in COMPONENTS:
        _assert_knobs_applied(deployment_for(objects, name), name)
    role_arn = KNOBS["serviceAccount"]["annotations"]
    assert [a["metadata"]["annotations"] for a in of_kind(objects, "ServiceAccount")] == [
        role_arn
    ] * 3
    services = of_kind(objects, "Service")
    assert [s["metadata"]["annotations"] for s in services] == [{"example.com/lb": "internal"}] * 3


def test_agent_knobs_reach_the_agent(agent: helm.Chart) -> None:
    """The same knobs reach the agent's Deployment and ServiceAccount; its own topology spread
    is used as given."""
    objects = render(agent, AGENT_KNOBS)
    (deployment,) = of_kind(objects, "Deployment")
    _assert_knobs_applied(deployment, "agent")
    assert (
        pod_spec(deployment)["topologySpreadConstraints"]
        == AGENT_KNOBS["topologySpreadConstraints"]
    )
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == KNOBS["serviceAccount"]["annotations"]


def test_agent_extra_containers_are_refused_in_sidecar_mode(agent: helm.Chart) -> None:
    """In sidecar mode the pod's containers are sidecar.containers; extraContainers says so."""
    values = {**AGENT_SIDECAR, "extraContainers": KNOBS["extraContainers"]}
    with pytest.raises(helm.HelmRenderError, match=r"sidecar\.containers"):
        render(agent, values)


# --- control-plane NetworkPolicy ------------------------------------------------------------


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {component(p): p["spec"] for p in of_kind(objects, "NetworkPolicy")}


def _rule_for(rules: list[dict[str, Any]], port: int) -> dict[str, Any]:
    (rule,) = [r for r in rules if {"protocol": "TCP", "port": port} in r.get("ports", [])]
    return rule


RELEASE_PODS = {
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/name": "sevvo-control-plane",
            "app.kubernetes.io/instance": "sevvo",
        }
    }
}


def test_control_plane_network_policy_defaults(control_plane: helm.Chart) -> None:
    """By default each component admits gRPC only from this release's pods, the health port
    from anywhere (the kubelet) and, for auth, the JWKS from Temporal's namespace; it may
    reach DNS, Postgres on 5432, the other components' gRPC port and (orchestrator only)
    Temporal's port."""
    objects = render(control_plane)
    policies = _policies(objects)
    assert set(policies) == set(COMPONENTS)
    for name, spec in policies.items():
        labels = deployment_for(objects, name)["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert _rule_for(spec["ingress"], 8443)["from"] == [RELEASE_PODS]
        assert "from" not in _rule_for(spec["ingress"], 8444)
        egress_ports = {(p["protocol"], p["port"]) for r in spec["egress"] for p in r["ports"]}
        temporal = {("TCP", 7233)} if name == "orchestrator" else set()
        assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 8443)} | temporal
        assert _rule_for(spec["egress"], 8443)["to"] == [RELEASE_PODS]
        assert "to" not in _rule_for(spec["egress"], 5432)
    jwks = _rule_for(policies["auth"]["ingress"], 8081)
    assert jwks["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "temporal"}}}
    ]
    assert len(policies["connections"]["ingress"]) == 2


def test_control_plane_network_policy_follows_its_values(control_plane: helm.Chart) -> None:
    """Endpoint namespaces and extra peers join the gRPC rule, probe CIDRs narrow the health
    port, the database and Temporal peers narrow egress, extra egress rules come last."""
    policies = _policies(render(control_plane, CONTROL_PLANE_KNOBS))
    np = CONTROL_PLANE_KNOBS["networkPolicy"]
    for spec in policies.values():
        assert _rule_for(spec["ingress"], 8443)["from"] == [
            RELEASE_PODS,
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
            *np["extraIngressFrom"],
        ]
        assert _rule_for(spec["ingress"], 8444)["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
        assert _rule_for(spec["egress"], 6432)["to"] == np["database"]["to"]
        assert spec["egress"][-1] == np["extraEgress"][0]
    assert _rule_for(policies["orchestrator"]["egress"], 7233)["to"] == np["temporalTo"]


def test_routed_endpoint_without_namespaces_keeps_grpc_reachable(control_plane: helm.Chart) -> None:
    """With a route enabled but no endpoint namespace named, the gRPC port admits any peer, so
    turning the policy on by default never cuts off an existing endpoint."""
    for name, spec in _policies(render(control_plane, CONTROL_PLANE_ENDPOINT)).items():
        assert "from" not in _rule_for(spec["ingress"], 8443), name


def test_control_plane_network_policy_skips_disabled_components(control_plane: helm.Chart) -> None:
    """A disabled component has no policy and no port in the others' egress; disabling the
    policy renders none."""
    values = {"orchestrator": {"enabled": False}, "connections": {"port": 9443}}
    policies = _policies(render(control_plane, values))
    assert set(policies) == {"auth", "connections"}
    assert _rule_for(policies["auth"]["egress"], 9443)["to"] == [RELEASE_PODS]
    assert _rule_for(policies["connections"]["egress"], 8443)["to"] == [RELEASE_PODS]
    assert _policies(render(control_plane, {"networkPolicy": {"enabled": False}})) == {}


# --- helm test and NOTES --------------------------------------------------------------------


def test_helm_test_pod_checks_each_enabled_service_over_tls(control_plane: helm.Chart) -> None:
    """The test hook runs the services' image and asks each enabled Service's TLS port for
    grpc.health.v1, trusting global.tls.caSecret; it runs restricted and is one of the
    release's pods, so the NetworkPolicy admits it."""
    objects = render(
        control_plane,
        {"global": {"tls": {"caSecret": "corp-ca"}}, "connections": {"enabled": False}},
    )
    (pod,) = of_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"].items() >= RELEASE_PODS["podSelector"]["matchLabels"].items()
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == only_container(deployment_for(objects, "auth"))["image"]
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    assert "HealthStub" in command[2] and "ssl_channel_credentials" in command[2]
    assert command[3:] == [
        CA_FILE,
        "sevvo-sevvo-control-plane-auth.sevvo.svc:8443",
        "sevvo-sevvo-control-plane-orchestrator.sevvo.svc:8443",
    ]
    assert spec["volumes"][0]["secret"]["secretName"] == "corp-ca"
    assert spec["restartPolicy"] == "Never"
    for rule, holds in RESTRICTED:
        assert holds(spec, container), rule
    compile(command[2], "<helm test>", "exec")  # The script at least parses.


def test_helm_test_pod_uses_system_roots_without_a_ca(control_plane: helm.Chart) -> None:
    """Without global.tls.caSecret the CA argument is empty (system roots) and nothing is
    mounted."""
    (pod,) = of_kind(render(control_plane), "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"][3] == ""
    assert "volumes" not in pod["spec"]


def test_auth_bootstrap_token_is_mounted_only_when_given(control_plane: helm.Chart) -> None:
    """auth.bootstrapToken.existingSecret mounts the token as a file for auth alone; empty (the
    default) leaves bootstrap disabled."""
    file = "/var/run/secrets/sevvo/bootstrap-token/token"
    objects = render(
        control_plane, {"auth": {"bootstrapToken": {"existingSecret": "sevvo-bootstrap"}}}
    )
    assert (
        env_of(only_container(deployment_for(objects, "auth")))["SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE"]
        == file
    )
    volumes = {v["name"]: v for v in pod_spec(deployment_for(objects, "auth"))["volumes"]}
    assert volumes["bootstrap-token"]["secret"]["secretName"] == "sevvo-bootstrap"
    for name in ("connections", "orchestrator"):
        assert "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE" not in env_of(
            only_container(deployment_for(objects, name))
        )
    defaults = render(control_plane)
    assert "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE" not in env_of(
        only_container(deployment_for(defaults, "auth"))
    )


# --- the web console -----------------------------------------------------------------------


def _console(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if component(o) == "console"]
    return found


def test_console_is_off_by_default(control_plane: helm.Chart) -> None:
    """The console needs a host and a certificate of its own: no object until enabled."""
    assert not [o for o in render(control_plane) if component(o) == "console"]


def test_helm_refuses_a_console_without_an_endpoint_to_call(control_plane: helm.Chart) -> None:
    """Without console.servicesEndpoint or endpoint.host the console has nothing to call."""
    with pytest.raises(helm.HelmError, match="servicesEndpoint"):
        render(control_plane, {"console": {"enabled": True}})


def test_console_runs_python_m_console_from_the_control_plane_image(
    control_plane: helm.Chart,
) -> None:
    """One Deployment runs `python -m console` from the services' image, serving HTTPS on
    8444 with the TLS Secret's files, calling the one endpoint on 443 over TLS."""
    objects = render(control_plane, CONTROL_PLANE_CONSOLE)
    deployment = _console(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = [c for c in pod_spec(deployment)["containers"] if c["name"] == "console"]
    assert container["command"] == ["python", "-m", "console"]
    assert container["image"] == "registry.example.com/sevvo/sevvo-control-plane:0.1.0"
    assert container["ports"] == [{"name": "https", "containerPort": 8444, "protocol": "TCP"}]
    env = env_of(container)
    assert env["SEVVO_CONSOLE_SERVICES_ENDPOINT"] == "api.sevvo.example:443"
    assert env["SEVVO_CONSOLE_PORT"] == "8444"
    assert env["SEVVO_TLS_CERT_FILE"] == "/var/run/secrets/sevvo/tls/tls.crt"
    assert env["SEVVO_TLS_KEY_FILE"] == "/var/run/secrets/sevvo/tls/tls.key"
    assert "SEVVO_CA_FILE" not in env  # the endpoint's certificate: system roots
    # No database, no keyring, no token: the TLS key is its only secret.
    assert not [k for k in env if "DATABASE" in k or "KEYRING" in k or "TOKEN" in k]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert set(volumes) == {"tmp", "tls", "extra"}
    assert volumes["tls"]["secret"]["secretName"] == "sevvo-console-tls"
    assert volumes["tls"]["secret"]["defaultMode"] == MODE_0440
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"]["readOnly"] is True
    assert env["SEVVO_CONSOLE_EXTRA"] == "1"
    assert container["resources"]["limits"]["memory"] == "192Mi"


def test_console_probes_get_healthz_over_https(control_plane: helm.Chart) -> None:
    """Startup, readiness and liveness all GET /healthz on the HTTPS port."""
    container = only_container(
        _console(render(control_plane, CONTROL_PLANE_ALL_OPTIONS), "Deployment")
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {
            "path": "/healthz",
            "port": "https",
            "scheme": "HTTPS",
        }


def test_console_follows_its_services_endpoint_and_ca(control_plane: helm.Chart) -> None:
    """console.servicesEndpoint replaces endpoint.host:443; console.ca mounts a CA bundle."""
    container = only_container(
        _console(render(control_plane, CONTROL_PLANE_ALL_OPTIONS), "Deployment")
    )
    env = env_of(container)
    assert env["SEVVO_CONSOLE_SERVICES_ENDPOINT"] == "api.sevvo.example:443"
    assert env["SEVVO_CA_FILE"] == CA_FILE
    grpc_in_cluster = render(
        control_plane,
        {"console": {"enabled": True, "servicesEndpoint": "gateway.gateway.svc:8443"}},
    )
    console_env = env_of(only_container(_console(grpc_in_cluster, "Deployment")))
    assert console_env["SEVVO_CONSOLE_SERVICES_ENDPOINT"] == "gateway.gateway.svc:8443"
    policy = _console(grpc_in_cluster, "NetworkPolicy")
    assert {"protocol": "TCP", "port": 8443} in [
        port for rule in policy["spec"]["egress"] for port in rule["ports"]
    ]


def test_console_service_budget_and_ingress(control_plane: helm.Chart) -> None:
    """The Service exposes HTTPS, two replicas get a budget, and the Ingress sends
    console.host to the Service over HTTPS."""
    objects = render(control_plane, CONTROL_PLANE_CONSOLE)
    service = _console(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 8444, "targetPort": "https", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"][COMPONENT_LABEL] == "console"
    assert _console(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert _console(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    ingress = _console(objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert annotations["a"] == "b"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["console.sevvo.example"], "secretName": "console-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "console.sevvo.example"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "https"},
    }
    with pytest.raises(helm.HelmError, match=r"console\.host"):
        render(
            control_plane,
            {
                "endpoint": {"host": "api.sevvo.example"},
                "console": {"enabled": True, "ingress": {"enabled": True}},
            },
        )


def test_console_network_policy(control_plane: helm.Chart) -> None:
    """In: the HTTPS port from the endpoint namespaces and the probe CIDRs once those are
    named (else from anywhere). Out: DNS and the endpoint's port only."""
    policy = _console(render(control_plane, CONTROL_PLANE_CONSOLE), "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8444}]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"ipBlock": {"cidr": "10.0.0.0/16"}},
    ]
    dns, endpoint = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert endpoint["ports"] == [{"protocol": "TCP", "port": 443}]
    assert endpoint["to"] == rule["from"][:1]
    open_policy = _console(
        render(control_plane, {"console": {"enabled": True, "servicesEndpoint": "a.b:443"}}),
        "NetworkPolicy",
    )
    assert "from" not in open_policy["spec"]["ingress"][0]
    no_policy = render(
        control_plane,
        {
            "console": {"enabled": True, "servicesEndpoint": "a.b:443"},
            "networkPolicy": {"enabled": False},
        },
    )
    assert not of_kind(no_policy, "NetworkPolicy")


def test_notes_say_how_to_reach_the_endpoint_and_create_the_first_org(
    control_plane: helm.Chart, agent: helm.Chart
) -> None:
    """NOTES.txt names the endpoint, `helm test`, and the bootstrap step with the token's
    Secret; the agent's names where it dials."""
    notes = control_plane.render(CONTROL_PLANE_KNOBS, name="sevvo", namespace="sevvo")[
        "sevvo-control-plane/templates/NOTES.txt"
    ]
    assert "api.sevvo.example:443" in notes
    assert "helm test sevvo -n sevvo" in notes
    assert "get secret sevvo-bootstrap" in notes and "bootstrap --org" in notes
    defaults = control_plane.render(None, name="sevvo", namespace="sevvo")[
        "sevvo-control-plane/templates/NOTES.txt"
    ]
    assert "port-forward" in defaults and "create-org" in defaults
    agent_notes = agent.render(AGENT_REQUIRED, name="sevvo", namespace="sevvo")[
        "sevvo-agent/templates/NOTES.txt"
    ]
    assert "api.sevvo.example:443" in agent_notes and "temporal.sevvo.example:443" in agent_notes


def test_agent_file_roots_reach_the_agent_only_when_set(agent: helm.Chart) -> None:
    """fileRoots becomes SEVVO_AGENT_FILE_ROOTS (joined by ':'); unset, no directory allowed."""
    (plain,) = of_kind(render(agent, AGENT_REQUIRED), "Deployment")
    assert "SEVVO_AGENT_FILE_ROOTS" not in env_of(only_container(plain))
    values = {**AGENT_REQUIRED, "fileRoots": ["/data/lake", "/mnt/exports"]}
    (deployment,) = of_kind(render(agent, values), "Deployment")
    assert env_of(only_container(deployment))["SEVVO_AGENT_FILE_ROOTS"] == "/data/lake:/mnt/exports"
