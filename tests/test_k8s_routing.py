"""The control-plane chart's one endpoint routes every RPC the agent and the CLI call to the
service that serves it, through the Gateway API GRPCRoute and through the Ingress.

The RPCs come from the code, not from a list kept here: the stubs the agent and the CLI build
(``<module>_pb2_grpc.<Service>Stub(``) name the proto services, whose descriptors give every
method; the servicers each ``services/<name>/server.py`` registers name the backend that
serves them. Gateway API kinds are not in kubernetes-validate's schemas, so they are checked
here against the fields and limits of the Gateway API v1 CRDs they use.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
from google.protobuf.descriptor import ServiceDescriptor

from cli.client import AGENT_TIMEOUT
from tests.test_k8s_manifests import of_kind, render

ROOT = Path(__file__).resolve().parents[1]
CONTROL_PLANE = ROOT / "deploy" / "k8s" / "sevvo-control-plane"
KUBE_VERSION = "1.31"
GATEWAY_API = "gateway.networking.k8s.io/v1"
HOST = "api.sevvo.example"
# Release "sevvo" in namespace "sevvo", as every render here.
BACKEND = {
    name: f"sevvo-sevvo-control-plane-{name}" for name in ("auth", "connections", "orchestrator")
}
PARENT = {"name": "public", "namespace": "gateway", "sectionName": "https"}
BOTH: dict[str, Any] = {
    "endpoint": {
        "host": HOST,
        "grpcRoute": {"enabled": True, "parentRefs": [PARENT]},
        "ingress": {"enabled": True, "tlsSecret": "api-tls"},
    }
}
STUB_CALL = re.compile(r"^(?P<service>\w+)Stub$")
SERVICER_ADD = re.compile(r"^add_(?P<service>\w+)Servicer_to_server$")


# --- the RPCs, from the code ----------------------------------------------------------------


def _pb2_grpc_imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> module, for every imported ``*_pb2_grpc`` module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if alias.name.endswith("_pb2_grpc"):
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.endswith("_pb2_grpc") and alias.asname:
                    names[alias.asname] = alias.name
    return names


def _service_calls(path: Path, pattern: re.Pattern[str]) -> set[str]:
    """Full names of the proto services whose ``<module>_pb2_grpc.<attribute>`` the file calls,
    the attribute matching ``pattern`` (its ``service`` group names the service)."""
    tree = ast.parse(path.read_text(), str(path))
    modules = _pb2_grpc_imports(tree)
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, match = node.func.value, pattern.match(node.func.attr)
        if match and isinstance(owner, ast.Name) and owner.id in modules:
            pb2 = importlib.import_module(modules[owner.id].removesuffix("_grpc"))
            found.add(pb2.DESCRIPTOR.services_by_name[match["service"]].full_name)
    return found


def _all_services() -> dict[str, ServiceDescriptor]:
    """Every service in the generated descriptors of protos/ (sevvo/*/v1/*_pb2.py)."""
    services = {}
    for path in sorted((ROOT / "sevvo").glob("*/v1/*_pb2.py")):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = service
    return services


SERVICES = _all_services()
CALLED = {
    service
    for package in ("agent", "cli")
    for path in sorted((ROOT / package).rglob("*.py"))
    for service in _service_calls(path, STUB_CALL)
}
SERVED_BY = {
    service: path.parent.name
    for path in sorted((ROOT / "services").glob("*/server.py"))
    for service in _service_calls(path, SERVICER_ADD)
}
# Every method path the agent or the CLI may call, and the component that serves it.
RPCS = sorted(
    (f"/{name}/{method.name}", SERVED_BY.get(name, "nobody"))
    for name in CALLED
    for method in SERVICES[name].methods
)


def test_the_rpcs_are_found_in_the_code() -> None:
    """The scan finds the stubs both clients use and the servicers of all three services."""
    # The agent's token exchange and work proofs, the CLI's users and audit, at least.
    assert {
        "sevvo.auth.v1.AuthService",
        "sevvo.orchestrator.v1.WorkProofService",
        "sevvo.auth.v1.UserService",
        "sevvo.audit.v1.AuditService",
    } <= CALLED
    assert set(SERVED_BY.values()) == set(BACKEND)
    assert len(RPCS) > len(CALLED)
    # Every service a client calls is served by exactly one component.
    assert set(SERVED_BY) >= CALLED, sorted(CALLED - set(SERVED_BY))


# --- rendering ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_plane() -> Iterator[helm.Chart]:
    with helm.Chart.load(CONTROL_PLANE) as chart:
        yield chart


@pytest.fixture(scope="module")
def both(control_plane: helm.Chart) -> list[dict[str, Any]]:
    """The chart with the GRPCRoute and the Ingress on, verifying backends against a CA."""
    return render(control_plane, {**BOTH, "global": {"tls": {"caSecret": "corp-ca"}}})


# --- where a call goes ----------------------------------------------------------------------


def grpcroute_backends(route: dict[str, Any], path: str) -> list[list[dict[str, Any]]]:
    """The backendRefs of every rule of the GRPCRoute that matches ``path``
    (GRPCMethodMatch, type Exact: the service and, when given, the method)."""
    service, method = path.strip("/").split("/")
    return [
        rule["backendRefs"]
        for rule in route["spec"]["rules"]
        if any(
            m["method"].get("type", "Exact") == "Exact"
            and m["method"].get("service", service) == service
            and m["method"].get("method", method) == method
            for m in rule["matches"]
        )
    ]


def ingress_backend(ingresses: list[dict[str, Any]], host: str, path: str) -> dict[str, Any]:
    """The backend an Ingress controller picks for ``path`` on ``host``: the longest Prefix
    path whose elements begin the request's (Kubernetes' Prefix semantics); it must be one."""
    request = path.split("/")
    candidates: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            if rule.get("host") != host:
                continue
            for p in rule["http"]["paths"]:
                assert p["pathType"] == "Prefix"
                elements = p["path"].rstrip("/").split("/")
                if request[: len(elements)] == elements:
                    candidates.append((len(elements), p["backend"], ingress))
    assert candidates, f"no Ingress path matches {path}"
    longest = max(length for length, _, _ in candidates)
    (chosen,) = [(b, i) for length, b, i in candidates if length == longest]
    backend, ingress = chosen
    return {"ingress": ingress, **backend["service"]}


@pytest.mark.parametrize(("path", "served_by"), RPCS, ids=[p for p, _ in RPCS])
def test_every_client_rpc_is_routed_to_the_service_that_serves_it(
    both: list[dict[str, Any]], path: str, served_by: str
) -> None:
    """The GRPCRoute and the Ingress both send the call to its serving component's Service,
    on the Service's TLS gRPC port."""
    assert served_by in BACKEND, f"{path} is served by no component"
    (route,) = of_kind(both, "GRPCRoute")
    assert grpcroute_backends(route, path) == [[{"name": BACKEND[served_by], "port": 8443}]]

    chosen = ingress_backend(of_kind(both, "Ingress"), HOST, path)
    assert (chosen["name"], chosen["port"]) == (BACKEND[served_by], {"name": "grpc"})
    annotations = chosen["ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    # The controller checks the certificate names the very Service it forwards to.
    assert (
        annotations["nginx.ingress.kubernetes.io/proxy-ssl-name"] == f"{chosen['name']}.sevvo.svc"
    )


def test_routes_name_exactly_the_services_each_component_serves(
    both: list[dict[str, Any]],
) -> None:
    """The chart's list of services per component is what the servers register: no service
    goes unrouted, none is routed to a component that does not serve it."""
    served = {b: {s for s, owner in SERVED_BY.items() if owner == b} for b in BACKEND}
    (route,) = of_kind(both, "GRPCRoute")
    by_rule = {
        rule["backendRefs"][0]["name"]: {m["method"]["service"] for m in rule["matches"]}
        for rule in route["spec"]["rules"]
    }
    assert by_rule == {BACKEND[b]: services for b, services in served.items()}
    by_ingress = {
        i["metadata"]["name"]: {
            p["path"].lstrip("/") for p in i["spec"]["rules"][0]["http"]["paths"]
        }
        for i in of_kind(both, "Ingress")
    }
    assert by_ingress == by_rule


def test_a_route_targets_a_rendered_service_port(both: list[dict[str, Any]]) -> None:
    """Every backendRef names a Service the chart renders, on its port named grpc (8443)."""
    ports = {
        s["metadata"]["name"]: {p["name"]: p["port"] for p in s["spec"]["ports"]}
        for s in of_kind(both, "Service")
    }
    (route,) = of_kind(both, "GRPCRoute")
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            assert ports[ref["name"]]["grpc"] == ref["port"]


# --- Gateway API objects, structurally ------------------------------------------------------

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _NAME,
        "namespace": _NAME,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_HOSTNAME = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
# The fields and limits of GRPCRoute and BackendTLSPolicy in Gateway API v1 (standard channel)
# that this chart uses; unknown fields fail, as the API server's structural schema prunes them.
GRPCROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": GATEWAY_API},
        "kind": {"const": "GRPCRoute"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["parentRefs", "rules"],
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": _NAME,
                            "namespace": _NAME,
                            "sectionName": _NAME,
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["matches", "backendRefs"],
                        "properties": {
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["method"],
                                    "properties": {
                                        "method": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            # One or both of service and method (CEL rule).
                                            "anyOf": [
                                                {"required": ["service"]},
                                                {"required": ["method"]},
                                            ],
                                            "properties": {
                                                "type": {"enum": ["Exact", "RegularExpression"]},
                                                "service": {
                                                    "type": "string",
                                                    "maxLength": 1024,
                                                    "pattern": r"^\.?[a-zA-Z_][a-zA-Z_0-9]*"
                                                    r"(\.[a-zA-Z_][a-zA-Z_0-9]*)*$",
                                                },
                                                "method": {
                                                    "type": "string",
                                                    "maxLength": 1024,
                                                    "pattern": r"^[A-Za-z_][A-Za-z_0-9]*$",
                                                },
                                            },
                                        }
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name", "port"],
                                    "properties": {
                                        "name": _NAME,
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
BACKEND_TLS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": GATEWAY_API},
        "kind": {"const": "BackendTLSPolicy"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["targetRefs", "validation"],
            "properties": {
                "targetRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["group", "kind", "name"],
                        "properties": {
                            "group": {"const": ""},
                            "kind": {"const": "Service"},
                            "name": _NAME,
                            "sectionName": _NAME,
                        },
                    },
                },
                "validation": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["hostname"],
                    # Exactly one source of trust (CEL rule).
                    "oneOf": [
                        {"required": ["caCertificateRefs"]},
                        {"required": ["wellKnownCACertificates"]},
                    ],
                    "properties": {
                        "hostname": _HOSTNAME,
                        "wellKnownCACertificates": {"const": "System"},
                        "caCertificateRefs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 8,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["group", "kind", "name"],
                                "properties": {
                                    "group": {"const": ""},
                                    "kind": {"const": "ConfigMap"},
                                    "name": _NAME,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
GATEWAY_SCHEMAS = {"GRPCRoute": GRPCROUTE_SCHEMA, "BackendTLSPolicy": BACKEND_TLS_SCHEMA}


def with_backend_ca(ca_config_map: str) -> dict[str, Any]:
    """BOTH, with the Gateway trusting that CA ConfigMap for the services ("" = system roots)."""
    return {
        "endpoint": {
            **BOTH["endpoint"],
            "grpcRoute": {
                "enabled": True,
                "parentRefs": [PARENT],
                "backendTls": {"caConfigMap": ca_config_map},
            },
        }
    }


@pytest.mark.parametrize("ca_config_map", ["", "sevvo-ca"], ids=["system-roots", "ca-configmap"])
def test_rendered_objects_are_valid(control_plane: helm.Chart, ca_config_map: str) -> None:
    """Gateway API objects match their v1 fields; everything else passes strict Kubernetes
    validation (the Ingress included)."""
    objects = render(control_plane, with_backend_ca(ca_config_map))
    kinds = [obj["kind"] for obj in objects]
    assert kinds.count("GRPCRoute") == 1
    assert kinds.count("BackendTLSPolicy") == kinds.count("Ingress") == 3
    for obj in objects:
        if obj["apiVersion"] == GATEWAY_API:
            jsonschema.Draft7Validator(GATEWAY_SCHEMAS[obj["kind"]]).validate(obj)
        else:
            assert kubernetes_validate.validate(obj, KUBE_VERSION, strict=True) == KUBE_VERSION


def test_the_gateway_dials_each_service_over_tls_checking_its_name(
    control_plane: helm.Chart,
) -> None:
    """A BackendTLSPolicy per Service: TLS to its grpc port, verifying the Service's DNS name
    against the CA ConfigMap when given, else the system roots."""
    trusts: list[tuple[str, dict[str, Any]]] = [
        ("", {"wellKnownCACertificates": "System"}),
        (
            "sevvo-ca",
            {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "sevvo-ca"}]},
        ),
    ]
    for ca, trust in trusts:
        policies = of_kind(render(control_plane, with_backend_ca(ca)), "BackendTLSPolicy")
        expected: dict[str, dict[str, Any]] = {
            name: {
                "targetRefs": [
                    {"group": "", "kind": "Service", "name": name, "sectionName": "grpc"}
                ],
                "validation": {"hostname": f"{name}.sevvo.svc", **trust},
            }
            for name in BACKEND.values()
        }
        assert {p["metadata"]["name"]: p["spec"] for p in policies} == expected


def test_backend_tls_policies_can_be_left_to_the_gateway(control_plane: helm.Chart) -> None:
    """backendTls.enabled=false renders the GRPCRoute without any BackendTLSPolicy."""
    values = with_backend_ca("")
    values["endpoint"]["grpcRoute"]["backendTls"]["enabled"] = False
    kinds = [obj["kind"] for obj in render(control_plane, values)]
    assert kinds.count("GRPCRoute") == 1
    assert "BackendTLSPolicy" not in kinds


def test_route_attaches_to_the_gateway_for_the_host(both: list[dict[str, Any]]) -> None:
    """The GRPCRoute serves endpoint.host on the given Gateway listener."""
    (route,) = of_kind(both, "GRPCRoute")
    assert route["spec"]["parentRefs"] == [PARENT]
    assert route["spec"]["hostnames"] == [HOST]


# --- options --------------------------------------------------------------------------------


def test_neither_option_renders_by_default(control_plane: helm.Chart) -> None:
    """By default the chart renders no route of any kind."""
    kinds = {obj["kind"] for obj in render(control_plane)}
    assert kinds.isdisjoint({"GRPCRoute", "BackendTLSPolicy", "Ingress"})
    assert "Service" in kinds


@pytest.mark.parametrize("option", ["grpcRoute", "ingress"])
def test_an_option_needs_the_host(control_plane: helm.Chart, option: str) -> None:
    """A route without endpoint.host fails the render, naming the value."""
    values = {"endpoint": {option: BOTH["endpoint"][option]}}
    with pytest.raises(helm.HelmRenderError, match=r"endpoint\.host is required"):
        render(control_plane, values)


def test_a_disabled_component_gets_no_route(control_plane: helm.Chart) -> None:
    """With connections off, neither option routes to it, and the others still route."""
    objects = render(control_plane, {**BOTH, "connections": {"enabled": False}})
    (route,) = of_kind(objects, "GRPCRoute")
    routed = {ref["name"] for rule in route["spec"]["rules"] for ref in rule["backendRefs"]}
    ingresses = {i["metadata"]["name"] for i in of_kind(objects, "Ingress")}
    policies = {p["metadata"]["name"] for p in of_kind(objects, "BackendTLSPolicy")}
    assert routed == ingresses == policies == {BACKEND["auth"], BACKEND["orchestrator"]}


def test_ingress_without_a_ca_speaks_grpcs_and_keeps_user_annotations(
    control_plane: helm.Chart,
) -> None:
    """No global.tls.caSecret: GRPCS without verification annotations; the TLS section and
    extra annotations are as given; the class is the value's."""
    values = {
        "endpoint": {
            "host": HOST,
            "ingress": {"enabled": True, "annotations": {"example.com/team": "sevvo"}},
        }
    }
    for ingress in of_kind(render(control_plane, values), "Ingress"):
        assert ingress["metadata"]["annotations"] == {
            "nginx.ingress.kubernetes.io/backend-protocol": "GRPCS",
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
            "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
            "example.com/team": "sevvo",
        }
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert "tls" not in ingress["spec"]


def test_ingress_verifies_backends_with_the_ca_secret(both: list[dict[str, Any]]) -> None:
    """With global.tls.caSecret the controller verifies each Service against it, by SNI."""
    for ingress in of_kind(both, "Ingress"):
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-secret"] == "sevvo/corp-ca"
        assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-verify"] == "on"
        assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-server-name"] == "on"
        assert ingress["spec"]["tls"] == [{"hosts": [HOST], "secretName": "api-tls"}]


def test_ingress_waits_as_long_as_the_cli_waits_for_the_agent(
    both: list[dict[str, Any]],
) -> None:
    """A call that waits for the agent (a test, a preview) may take the CLI's AGENT_TIMEOUT;
    the controller must not cut it off first."""
    for ingress in of_kind(both, "Ingress"):
        annotations = ingress["metadata"]["annotations"]
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= AGENT_TIMEOUT


def test_ingress_refuses_a_ca_key_nginx_cannot_read(control_plane: helm.Chart) -> None:
    """ingress-nginx reads the CA from key ca.crt; another caKey fails the render."""
    values = {**BOTH, "global": {"tls": {"caSecret": "corp-ca", "caKey": "bundle.pem"}}}
    with pytest.raises(helm.HelmRenderError, match=r"caKey to ca\.crt"):
        render(control_plane, values)


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"grpcRoute": {"enabled": True}}, "parentRefs"),
        ({"grpcRoute": {"parentRefs": [{"name": "gw", "listener": "https"}]}}, "listener"),
        ({"host": "https://api.sevvo.example"}, "host"),
        ({"host": "api.sevvo.example:443"}, "host"),
        ({"ingress": {"annotations": {"a": 1}}}, "annotations"),
        ({"ingress": {"tlsSecret": "Api_TLS"}}, "tlsSecret"),
        ({"ingress": {"timeoutSeconds": 30}}, "timeoutSeconds"),
        ({"grpcRoute": {"backendTls": {"caSecret": "x"}}}, "caSecret"),
        ({"routes": []}, "routes"),
    ],
    ids=[
        "no-parent",
        "parent-key",
        "scheme",
        "port",
        "annotation-type",
        "tls-name",
        "timeout",
        "ca",
        "key",
    ],
)
def test_schema_rejects_bad_endpoint_values(
    control_plane: helm.Chart, override: dict[str, Any], where: str
) -> None:
    """values.schema.json types every endpoint key and rejects unknown ones."""
    schema, merged = control_plane.schema, control_plane.merge_values({"endpoint": override})
    assert schema is not None
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.Draft7Validator(schema).validate(merged)
    failures = [caught.value, *caught.value.context]
    assert any(where in "/".join(map(str, e.absolute_path)) or where in e.message for e in failures)
