"""Checks every shipped deployment file without a cluster or a Docker engine.

- deploy/ renders with kustomize, base and both overlays, and every Kubernetes
  object in it (and in envoy/istio/extproc.yaml) passes kubernetes-validate's
  strict schemas for the oldest and the newest Kubernetes it knows.
- The Istio EnvoyFilter and DestinationRule and the Envoy Gateway policies pass
  their CRDs' openAPIV3Schema with unknown fields as errors, as `kubectl apply`
  with server-side field validation would report them. BackendTLSPolicy and
  EnvoyProxy, whose schemas are not among the shared ones, are checked against
  the field names of their upstream APIs.
- The TLS overlays only add TLS to their default overlays, their files agree on
  names, ports, hostnames and Secret keys, and extproc serves mutual TLS with the
  rendered flags and certificates made as the comments say.
- docker-compose.yaml passes the Compose specification's JSON Schema.
- The Dockerfile copies files that exist and that .dockerignore keeps.
- Every extproc and demo-server flag or variable the files set is one the
  binaries know, and every shipped policy passes `extproc check-config`.

The public schemas come from ../shared/schemas beside the repository (CI lays
shared/ there); SCHEMAS_DIR overrides that. Without them the schema tests skip,
or fail when CI=true.
"""

import base64
import copy
import fnmatch
import json
import os
import re
import shlex
import socket
import ssl
import subprocess

import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS = os.environ.get("SCHEMAS_DIR") or os.path.join(ROOT, "..", "shared", "schemas")

# The kustomize CLI, fetched and built by the go command: the version the Go
# module proxy serves that builds with this repository's Go.
KUSTOMIZE = ["go", "run", "sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"]

KUSTOMIZATIONS = [
    "deploy/base",
    "deploy/overlays/istio",
    "deploy/overlays/envoy-gateway",
    "deploy/overlays/istio-tls",
    "deploy/overlays/envoy-gateway-tls",
]

# The overlays that put extproc's gRPC port on mutual TLS, and the default ones they
# build on, which must stay plaintext.
TLS_OVERLAYS = {"deploy/overlays/istio-tls": "deploy/overlays/istio", "deploy/overlays/envoy-gateway-tls": "deploy/overlays/envoy-gateway"}

# Kinds checked against a CRD instead of kubernetes-validate: (group, kind) ->
# the file under SCHEMAS that defines it.
CRD_FILES = {
    ("networking.istio.io", "EnvoyFilter"): "istio.crds.yaml",
    ("networking.istio.io", "DestinationRule"): "istio.crds.yaml",
    ("gateway.envoyproxy.io", "EnvoyExtensionPolicy"): "envoy-gateway.envoyextensionpolicies.crd.yaml",
    ("gateway.envoyproxy.io", "ClientTrafficPolicy"): "envoy-gateway.clienttrafficpolicies.crd.yaml",
}

# Kinds the files use whose schema is in neither place: checked against the field
# names of their upstream API by known_fields_errors (BackendTLSPolicy as Gateway API
# v1.2 defines it, EnvoyProxy's backendTLS as Envoy Gateway v1.3 does) and by the
# TLS tests below. (group, kind) -> the apiVersion the files must use.
NO_SCHEMA_KINDS = {
    ("gateway.networking.k8s.io", "BackendTLSPolicy"): "gateway.networking.k8s.io/v1alpha3",
    ("gateway.envoyproxy.io", "EnvoyProxy"): "gateway.envoyproxy.io/v1alpha1",
}

# Oldest and newest Kubernetes whose schemas the pinned kubernetes-validate ships.
K8S_VERSIONS = sorted({kv.all_versions()[0], kv.latest_version()})


def repo_path(rel):
    return os.path.join(ROOT, rel)


def read(rel):
    with open(repo_path(rel)) as f:
        return f.read()


def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def schema_file(name):
    path = os.path.join(SCHEMAS, name)
    if not os.path.exists(path):
        msg = f"{path} is missing: the public schemas are expected in ../shared/schemas beside the repository (or SCHEMAS_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# ---- rendering ---------------------------------------------------------------


@pytest.fixture(scope="session")
def rendered():
    """Every kustomization under deploy/, rendered: path -> list of objects."""
    out = {}
    for k in KUSTOMIZATIONS:
        r = subprocess.run(KUSTOMIZE + ["build", k], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"kustomize build {k}: exit {r.returncode}\n{r.stderr}"
        out[k] = load_docs(r.stdout)
    return out


def group_of(obj):
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_crd_kind(obj):
    return (group_of(obj), obj["kind"]) in CRD_FILES


def is_no_schema_kind(obj):
    return (group_of(obj), obj["kind"]) in NO_SCHEMA_KINDS


def kubernetes_objects(rendered):
    """(where, object) for every built-in Kubernetes object the project ships."""
    objs = [
        (f"{k}: {o['kind']}/{o['metadata']['name']}", o)
        for k, docs in rendered.items()
        for o in docs
        if not is_crd_kind(o) and not is_no_schema_kind(o)
    ]
    objs += [(f"envoy/istio/extproc.yaml: {o['kind']}/{o['metadata']['name']}", o) for o in load_docs(read("envoy/istio/extproc.yaml"))]
    return objs


def find(docs, kind, name):
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind}/{name} among {[(d['kind'], d['metadata']['name']) for d in docs]}")


# ---- Kubernetes objects --------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_object_passes_the_strict_schema(rendered, version):
    errors = []
    for where, obj in kubernetes_objects(rendered):
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{where}: Kubernetes {version}: {e.message} at {'.'.join(str(p) for p in e.path)}")
    assert not errors, "\n".join(errors)


def test_strict_kubernetes_schema_rejects_a_misspelt_field(rendered):
    # Proves the check above is not vacuous: strict schemas refuse unknown fields.
    dep = copy.deepcopy(find(rendered["deploy/base"], "Deployment", "extproc"))
    dep["spec"]["replica"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, kv.latest_version(), strict=True)


def test_every_rendered_object_is_validated_by_one_schema_or_the_other(rendered):
    # A kind neither kubernetes-validate nor a CRD here knows would pass unseen.
    for k, docs in rendered.items():
        for o in docs:
            if is_crd_kind(o):
                continue
            if is_no_schema_kind(o):
                # Checked by test_objects_without_a_schema_use_only_known_fields.
                assert o["apiVersion"] == NO_SCHEMA_KINDS[(group_of(o), o["kind"])], f"{k}: {o['kind']} {o['apiVersion']}"
                continue
            try:
                kv.validate(o, kv.latest_version(), strict=True)
            except kv.SchemaNotFoundError:
                pytest.fail(f"{k}: no schema for {o['apiVersion']} {o['kind']}")


def test_overlays_add_their_gateway_resources_to_the_base(rendered):
    kinds = {k: sorted(o["kind"] for o in docs) for k, docs in rendered.items()}
    assert "EnvoyFilter" in kinds["deploy/overlays/istio"]
    assert {"EnvoyExtensionPolicy", "ClientTrafficPolicy"} <= set(kinds["deploy/overlays/envoy-gateway"])
    for overlay in ("deploy/overlays/istio", "deploy/overlays/envoy-gateway"):
        for o in rendered[overlay]:
            assert o["metadata"].get("namespace", "mcp") == "mcp", f"{overlay}: {o['kind']}/{o['metadata']['name']} outside namespace mcp"


def test_extproc_deployment_is_hardened_and_probed(rendered):
    dep = find(rendered["deploy/base"], "Deployment", "extproc")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == ["kubernetes.io/hostname"]
    (c,) = spec["containers"]
    assert re.fullmatch(r"ghcr\.io/mcp-ratelimit/extproc:v\d+\.\d+\.\d+", c["image"]), c["image"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "admin": 8081}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert "startupProbe" in c
    assert c["resources"]["requests"] and c["resources"]["limits"]
    pdb = find(rendered["deploy/base"], "PodDisruptionBudget", "extproc")
    assert pdb["spec"]["minAvailable"] == 1


def test_service_ports_name_ports_of_the_pods_they_select(rendered):
    for k, docs in rendered.items():
        for svc in (d for d in docs if d["kind"] == "Service"):
            sel = svc["spec"]["selector"]
            pods = [d for d in docs if d["kind"] == "Deployment" and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert len(pods) == 1, f"{k}: Service/{svc['metadata']['name']} selects {len(pods)} Deployments"
            named = {p["name"]: p["containerPort"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            for p in svc["spec"]["ports"]:
                assert p["targetPort"] in named, f"{k}: Service/{svc['metadata']['name']} port {p['name']}: no container port {p['targetPort']!r}"
                assert named[p["targetPort"]] == p["port"], f"{k}: Service/{svc['metadata']['name']} port {p['name']}"
    grpc = [p for p in find(rendered["deploy/base"], "Service", "extproc")["spec"]["ports"] if p["port"] == 50051]
    assert grpc and grpc[0]["appProtocol"] == "grpc"


def test_identity_key_comes_from_a_secret_whose_placeholder_extproc_refuses(rendered, extproc_bin):
    docs = rendered["deploy/base"]
    (c,) = find(docs, "Deployment", "extproc")["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "EXTPROC_IDENTITY_KEY"]
    secret = find(docs, "Secret", ref["name"])  # kustomize renamed the reference with the hash
    placeholder = base64.b64decode(secret["data"][ref["key"]]).decode()
    r = subprocess.run(
        [extproc_bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
        env={"EXTPROC_IDENTITY_KEY": placeholder, "PATH": os.environ.get("PATH", "")},
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode != 0 and "EXTPROC_IDENTITY_KEY" in r.stderr, f"extproc with the placeholder key: exit {r.returncode}\n{r.stderr}"


def test_network_policies_let_only_the_gateway_reach_grpc_and_prometheus_the_metrics(rendered):
    want_gateway = {
        "deploy/base": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}],
        "deploy/overlays/istio": [{"podSelector": {"matchLabels": {"app": "mcp-server"}}}],
        "deploy/overlays/envoy-gateway": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
            "podSelector": {"matchLabels": {
                "gateway.envoyproxy.io/owning-gateway-name": "mcp-gateway",
                "gateway.envoyproxy.io/owning-gateway-namespace": "mcp",
            }},
        }],
    }
    for tls, plain in TLS_OVERLAYS.items():
        want_gateway[tls] = want_gateway[plain]
    for k, docs in rendered.items():
        np = find(docs, "NetworkPolicy", "extproc")
        rules = {r["ports"][0]["port"]: r for r in np["spec"]["ingress"]}
        assert sorted(rules) == [8081, 50051], k
        assert all(len(r["ports"]) == 1 for r in np["spec"]["ingress"]), k
        assert rules[50051]["from"] == want_gateway[k], k
        assert rules[8081]["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}, k


def test_istio_network_policy_admits_the_pods_the_envoyfilter_runs_in(rendered):
    docs = rendered["deploy/overlays/istio"]
    ef = find(docs, "EnvoyFilter", "mcp-ratelimit")
    np = find(docs, "NetworkPolicy", "extproc")
    assert np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == ef["spec"]["workloadSelector"]["labels"]


# ---- CRDs ----------------------------------------------------------------------


def structural_to_json_schema(s, top=True):
    """Kubernetes' structural openAPIV3Schema as a JSON Schema that refuses
    unknown fields, as server-side field validation does: nullable allows null,
    x-kubernetes-int-or-string allows both, x-kubernetes-preserve-unknown-fields
    keeps an object open, and every other object is closed."""
    if isinstance(s, list):
        return [structural_to_json_schema(x, False) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: structural_to_json_schema(sub, False) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[k] = structural_to_json_schema(v, False)
        else:
            out[k] = v
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    if top:
        # The API server checks these itself for every kind (metadata as
        # ObjectMeta); some CRDs, Istio's among them, leave them out.
        out["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return out


def crd_validator(obj):
    group, kind = group_of(obj), obj["kind"]
    version = obj["apiVersion"].split("/")[1]
    with open(schema_file(CRD_FILES[(group, kind)])) as f:
        crds = load_docs(f.read())
    for crd in crds:
        if crd.get("kind") == "CustomResourceDefinition" and crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    assert v.get("served", True), f"{group}/{version} {kind} is not served"
                    schema = structural_to_json_schema(v["schema"]["openAPIV3Schema"])
                    return jsonschema.Draft7Validator(schema)
            pytest.fail(f"the {kind} CRD has no version {version}")
    pytest.fail(f"no CRD for {group} {kind} in {CRD_FILES[(group, kind)]}")


def crd_objects():
    return [
        pytest.param(o, id=f"{rel}:{o['kind']}/{o['metadata']['name']}")
        for rel in ("envoy/istio/envoyfilter.yaml", "envoy/gateway/extensionpolicy.yaml", "envoy/istio/tls/destinationrule.yaml")
        for o in load_docs(read(rel))
    ]


@pytest.mark.parametrize("obj", crd_objects())
def test_gateway_resources_pass_their_crd_schema(obj):
    errors = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in crd_validator(obj).iter_errors(obj)]
    assert not errors, "\n".join(errors)


def test_crd_schema_rejects_a_misspelt_field():
    # Proves the conversion closes objects: a typo must not validate.
    (policy,) = [o for o in load_docs(read("envoy/gateway/extensionpolicy.yaml")) if o["kind"] == "EnvoyExtensionPolicy"]
    bad = copy.deepcopy(policy)
    bad["spec"]["extProc"][0]["failOpn"] = True
    assert list(crd_validator(bad).iter_errors(bad)), "a misspelt field passed the EnvoyExtensionPolicy schema"
    (filt,) = load_docs(read("envoy/istio/envoyfilter.yaml"))
    bad = copy.deepcopy(filt)
    bad["spec"]["configPatches"][0]["match"]["contxt"] = "SIDECAR_INBOUND"
    assert list(crd_validator(bad).iter_errors(bad)), "a misspelt field passed the EnvoyFilter schema"
    (rule,) = load_docs(read("envoy/istio/tls/destinationrule.yaml"))
    bad = copy.deepcopy(rule)
    bad["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["subjectAltName"] = ["x"]
    assert list(crd_validator(bad).iter_errors(bad)), "a misspelt field passed the DestinationRule schema"


def test_crd_schema_keeps_envoy_config_in_patches_open():
    # The patch value is Envoy's own config (checked with Envoy elsewhere), which the
    # CRD keeps with x-kubernetes-preserve-unknown-fields.
    (filt,) = load_docs(read("envoy/istio/envoyfilter.yaml"))
    ok = copy.deepcopy(filt)
    ok["spec"]["configPatches"][0]["patch"]["value"]["any_envoy_field"] = 1
    assert not list(crd_validator(ok).iter_errors(ok))


# ---- TLS to the processor --------------------------------------------------------

# Field names of the upstream APIs of NO_SCHEMA_KINDS, as far as the files use them:
# BackendTLSPolicy as Gateway API v1.2 defines v1alpha3, EnvoyProxy's spec.backendTLS
# as Envoy Gateway v1.3 defines it. None: any value; a frozenset: the allowed values
# (of the value, or of each item of a list); [x]: a list of x.
KNOWN_FIELDS = {
    "BackendTLSPolicy": {"spec": {
        "targetRefs": [{"group": None, "kind": None, "name": None, "sectionName": None}],
        "validation": {
            "caCertificateRefs": [{"group": None, "kind": None, "name": None}],
            "hostname": None,
            "subjectAltNames": [{"type": frozenset({"Hostname", "URI"}), "hostname": None, "uri": None}],
            "wellKnownCACertificates": frozenset({"System"}),
        },
        "options": None,
    }},
    "EnvoyProxy": {"spec": {"backendTLS": {
        "clientCertificateRef": {"group": None, "kind": None, "name": None, "namespace": None},
        "alpnProtocols": frozenset({"http/1.0", "http/1.1", "h2"}),
        "minVersion": frozenset({"Auto", "1.0", "1.1", "1.2", "1.3"}),
        "maxVersion": frozenset({"Auto", "1.0", "1.1", "1.2", "1.3"}),
        "ciphers": None,
        "ecdhCurves": None,
        "signatureAlgorithms": None,
    }}},
}


def known_fields_errors(obj):
    def walk(v, known, path):
        if known is None:
            return []
        if isinstance(known, frozenset):
            bad = [x for x in (v if isinstance(v, list) else [v]) if x not in known]
            return [f"{path}: {x!r} is not one of {sorted(known)}" for x in bad]
        if isinstance(known, list):
            if not isinstance(v, list):
                return [f"{path}: want a list"]
            return [e for i, x in enumerate(v) for e in walk(x, known[0], f"{path}[{i}]")]
        if not isinstance(v, dict):
            return [f"{path}: want an object"]
        return [e for k, x in v.items() for e in ([f"{path}.{k}: unknown field"] if k not in known else walk(x, known[k], f"{path}.{k}"))]

    top = {"apiVersion": None, "kind": None, "metadata": None, **KNOWN_FIELDS[obj["kind"]]}
    return walk(obj, top, obj["kind"])


def test_objects_without_a_schema_use_only_known_fields(rendered):
    seen = set()
    for k, docs in rendered.items():
        for o in docs:
            if is_no_schema_kind(o):
                seen.add(o["kind"])
                errors = known_fields_errors(o)
                assert not errors, f"{k}: " + "\n".join(errors)
    assert seen == {kind for _, kind in NO_SCHEMA_KINDS}, seen


def test_known_fields_check_rejects_a_misspelt_field(rendered):
    docs = rendered["deploy/overlays/envoy-gateway-tls"]
    bad = copy.deepcopy(find(docs, "BackendTLSPolicy", "extproc"))
    bad["spec"]["validation"]["hostnme"] = "x"
    assert known_fields_errors(bad)
    bad = copy.deepcopy(find(docs, "EnvoyProxy", "mcp-gateway"))
    bad["spec"]["backendTLS"]["alpnProtocols"] = ["h2c"]
    assert known_fields_errors(bad)


def extproc_container(docs):
    (c,) = find(docs, "Deployment", "extproc")["spec"]["template"]["spec"]["containers"]
    return c


def tls_flags(container):
    return {f: a.split("=", 1)[1] for a in container["args"] for f in ("grpc-tls-cert", "grpc-tls-key", "grpc-client-ca") if a.startswith(f"--{f}=")}


def strip_tls(obj):
    """The extproc Deployment as it was before the TLS component and patches."""
    o = copy.deepcopy(obj)
    spec = o["spec"]["template"]["spec"]
    c = spec["containers"][0]
    c["args"] = [a for a in c["args"] if not a.startswith(("--grpc-tls-", "--grpc-client-ca"))]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "grpc-tls"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "grpc-tls"]
    o["spec"]["template"]["metadata"].get("annotations", {}).pop("traffic.sidecar.istio.io/excludeInboundPorts", None)
    return o


def test_tls_overlays_only_add_tls_to_their_default_overlays(rendered):
    for tls, plain in TLS_OVERLAYS.items():
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        plain_objs = {key(o): o for o in rendered[plain]}
        tls_objs = {key(o): o for o in rendered[tls]}
        assert plain_objs.keys() <= tls_objs.keys(), tls
        for k, o in plain_objs.items():
            assert (strip_tls(tls_objs[k]) if k == ("Deployment", "extproc") else tls_objs[k]) == o, f"{tls}: {k} differs from {plain}"
        added = sorted(tls_objs.keys() - plain_objs.keys())
        want = {"deploy/overlays/istio-tls": [("DestinationRule", "extproc-tls")],
                "deploy/overlays/envoy-gateway-tls": [("BackendTLSPolicy", "extproc"), ("EnvoyProxy", "mcp-gateway")]}
        assert added == want[tls], added
    for k in ("deploy/base", *TLS_OVERLAYS.values()):
        assert not tls_flags(extproc_container(rendered[k])), f"{k}: the default is plaintext"


def test_tls_flags_read_the_secret_volume_they_mount(rendered):
    for k in TLS_OVERLAYS:
        c = extproc_container(rendered[k])
        flags = tls_flags(c)
        assert sorted(flags) == ["grpc-client-ca", "grpc-tls-cert", "grpc-tls-key"], k
        spec = find(rendered[k], "Deployment", "extproc")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for f, path in flags.items():
            (m,) = [m for m in c["volumeMounts"] if os.path.dirname(path) == m["mountPath"]]
            assert m.get("readOnly") is True, f"{k}: {m}"
            assert volumes[m["name"]].get("secret", {}).get("secretName") == "extproc-tls", f"{k}: --{f} reads {volumes[m['name']]}"


def documented_secrets(rel):
    """Secret name -> keys, from the `kubectl create secret` commands in rel's comments."""
    text = re.sub(r"\\\n#\s*", " ", read(rel))
    out = {}
    for m in re.finditer(r"^#\s+kubectl .*create secret generic (\S+)(.*)$", text, re.M):
        out[m.group(1)] = {f.split("=")[0] for f in re.findall(r"--from-file=(\S+)", m.group(2))}
    return out


def test_documented_secrets_hold_the_keys_the_files_read(rendered):
    (server,) = documented_secrets("deploy/components/extproc-tls/kustomization.yaml").items()
    assert server[0] == "extproc-tls"
    for k in TLS_OVERLAYS:
        assert {os.path.basename(p) for p in tls_flags(extproc_container(rendered[k])).values()} == server[1], k
    istio = documented_secrets("envoy/istio/tls/destinationrule.yaml")
    (rule,) = load_docs(read("envoy/istio/tls/destinationrule.yaml"))
    tls = rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]
    paths = [tls[f] for f in ("clientCertificate", "privateKey", "caCertificates")]
    (name,) = istio
    assert {os.path.basename(p) for p in paths} == istio[name] == {"tls.crt", "tls.key", "ca.crt"}
    volumes, mounts = sidecar_patch_volumes()
    (mount,) = [m for m in mounts if all(os.path.dirname(p) == m["mountPath"] for p in paths)]
    (vol,) = [v for v in volumes if v["name"] == mount["name"]]
    assert vol["secret"]["secretName"] == name
    eg = documented_secrets("envoy/gateway/tls/backendtlspolicy.yaml")
    docs = rendered["deploy/overlays/envoy-gateway-tls"]
    ref = find(docs, "EnvoyProxy", "mcp-gateway")["spec"]["backendTLS"]["clientCertificateRef"]
    (ca,) = find(docs, "BackendTLSPolicy", "extproc")["spec"]["validation"]["caCertificateRefs"]
    assert ref["kind"] == ca["kind"] == "Secret"
    assert eg.get(ref["name"]) == {"tls.crt", "tls.key", "ca.crt"}, eg  # client certificate and CA in one Secret
    assert ca["name"] == ref["name"]


def sidecar_patch_volumes():
    ann = yaml.safe_load(read("envoy/istio/tls/mcp-server-sidecar-patch.yaml"))["spec"]["template"]["metadata"]["annotations"]
    return json.loads(ann["sidecar.istio.io/userVolume"]), json.loads(ann["sidecar.istio.io/userVolumeMount"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_istio_sidecar_patch_adds_a_valid_volume_and_mount(version):
    # The annotations are JSON the injector turns into a volume and a mount of the
    # istio-proxy container: a Pod holding them must pass the strict schema.
    volumes, mounts = sidecar_patch_volumes()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"volumes": volumes, "containers": [{"name": "istio-proxy", "image": "x", "volumeMounts": mounts}]}}
    kv.validate(pod, version, strict=True)
    bad = copy.deepcopy(pod)
    bad["spec"]["volumes"][0]["secret"]["secretNam"] = "x"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, version, strict=True)


def documented_san():
    (san,) = re.findall(r"subjectAltName=DNS:(\S+)", read("deploy/components/extproc-tls/kustomization.yaml"))
    return san


def test_istio_destination_rule_secures_the_cluster_the_envoyfilter_uses(rendered):
    docs = rendered["deploy/overlays/istio-tls"]
    ef = find(docs, "EnvoyFilter", "mcp-ratelimit")
    cluster = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    m = re.fullmatch(r"outbound\|(\d+)\|\|(\S+)", cluster)
    assert m, cluster
    port, host = int(m.group(1)), m.group(2)
    rule = find(docs, "DestinationRule", "extproc-tls")
    assert rule["spec"]["host"] == host
    assert rule["spec"]["exportTo"] == ["."]
    (pl,) = rule["spec"]["trafficPolicy"]["portLevelSettings"]
    assert pl["port"] == {"number": port}
    tls = pl["tls"]
    assert tls["mode"] == "MUTUAL"
    assert tls["sni"] == host and tls["subjectAltNames"] == [host] == [documented_san()]
    # Istio offers ALPN h2 only on a cluster it knows to be HTTP/2: the Service port's appProtocol.
    svc = find(docs, "Service", "extproc")
    (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    assert sp["appProtocol"] == "grpc"
    assert host == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    # extproc's own sidecar, if any, must not take the port that speaks extproc's TLS.
    dep = find(docs, "Deployment", "extproc")
    excluded = dep["spec"]["template"]["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"].split(",")
    (cp,) = [p["containerPort"] for p in extproc_container(docs)["ports"] if p["name"] == sp["targetPort"]]
    assert str(cp) in excluded


def test_envoy_gateway_backend_tls_policy_covers_the_extproc_backend(rendered):
    docs = rendered["deploy/overlays/envoy-gateway-tls"]
    eep = find(docs, "EnvoyExtensionPolicy", "mcp-ratelimit")
    (ref,) = eep["spec"]["extProc"][0]["backendRefs"]
    btp = find(docs, "BackendTLSPolicy", "extproc")
    (target,) = btp["spec"]["targetRefs"]
    svc = find(docs, "Service", ref["name"])
    assert (target["group"], target["kind"], target["name"]) == ("", "Service", svc["metadata"]["name"])
    assert btp["metadata"]["namespace"] == svc["metadata"]["namespace"] == eep["metadata"]["namespace"]
    # Envoy Gateway matches sectionName against the name of the Service port the backendRef uses.
    (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == ref["port"]]
    assert target["sectionName"] == sp["name"]
    assert btp["spec"]["validation"]["hostname"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local" == documented_san()
    ep = find(docs, "EnvoyProxy", "mcp-gateway")
    tls = ep["spec"]["backendTLS"]
    assert tls["clientCertificateRef"]["namespace"] == ep["metadata"]["namespace"]
    assert "h2" in tls["alpnProtocols"]
    # gateway-patch.yaml attaches this EnvoyProxy to the Gateway the ClientTrafficPolicy targets.
    patch_text = read("envoy/gateway/tls/gateway-patch.yaml")
    assert yaml.safe_load(patch_text)["spec"]["infrastructure"]["parametersRef"] == {
        "group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": ep["metadata"]["name"]}
    (gateway,) = re.findall(r"kubectl -n (\S+) patch gateway (\S+)", patch_text)
    (ctp_target,) = find(docs, "ClientTrafficPolicy", "mcp-client-traffic")["spec"]["targetRefs"]
    assert gateway == (ep["metadata"]["namespace"], ctp_target["name"])


def documented_openssl_commands():
    text = re.sub(r"\\\n#\s*", " ", read("deploy/components/extproc-tls/kustomization.yaml"))
    return [m.group(1) for m in re.finditer(r"^#\s+(openssl .*)$", text, re.M)]


def test_tls_component_serves_mutual_tls_with_the_documented_certificates(rendered, extproc_bin, tmp_path):
    # The component's openssl commands make the certificates; extproc runs with the
    # rendered Deployment's TLS flags; a client like Envoy (client certificate,
    # ALPN h2, the hostname Envoy checks) gets through, one without a certificate not.
    cmds = documented_openssl_commands()
    assert len(cmds) == 3, cmds
    for cmd in cmds + [
        # Envoy's client certificate, from the same CA.
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=envoy -keyout client.key -out client.csr",
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -days 1 -out client.crt",
    ]:
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd}\n{r.stderr}"
    docs = rendered["deploy/overlays/envoy-gateway-tls"]
    c = extproc_container(docs)
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "grpc-tls"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(find(docs, "ConfigMap", "extproc-policy")["data"]["policy.yaml"])
    args = []
    for a in c["args"]:
        if a.startswith(("--grpc-addr=", "--admin-addr=")):
            a = a.split("=")[0] + "=127.0.0.1:0"
        elif a.startswith("--config="):
            a = f"--config={policy}"
        args.append(a.replace(mount["mountPath"], str(tmp_path)))
    proc = subprocess.Popen([extproc_bin, *args], env={"EXTPROC_IDENTITY_KEY": "k" * 64, "PATH": os.environ.get("PATH", "")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, addr = [], None
        for line in proc.stdout:  # readiness: the log line "ready"
            lines.append(line)
            rec = json.loads(line)
            if rec["msg"] == "grpc listening":
                addr = rec["addr"]
            if rec["msg"] == "ready":
                break
        assert addr and lines[-1:] and json.loads(lines[-1])["msg"] == "ready", "".join(lines)
        host, port = addr.rsplit(":", 1)

        def connect(with_cert):
            ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            ctx.set_alpn_protocols(["h2"])
            if with_cert:
                ctx.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
            raw = socket.create_connection((host, int(port)))
            return ctx.wrap_socket(raw, server_hostname=documented_san())

        with connect(True) as s:
            assert s.selected_alpn_protocol() == "h2"
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            frame = b""
            while len(frame) < 9 and (chunk := s.recv(9 - len(frame))):
                frame += chunk
            assert len(frame) == 9 and frame[3] == 0x4, frame  # the server's SETTINGS: HTTP/2 over the TLS
        with connect(False) as s, pytest.raises(ssl.SSLError, match="(?i)certificate required"):
            s.recv(1)
    finally:
        proc.terminate()
        proc.wait()


# ---- Compose -------------------------------------------------------------------


def compose_validator():
    with open(schema_file("compose-spec.json")) as f:
        schema = json.load(f)
    # Its $schema names draft-07 without the trailing '#' that jsonschema looks up.
    assert "draft-07" in schema["$schema"], schema["$schema"]
    return jsonschema.Draft7Validator(schema)


def test_compose_file_passes_the_compose_specification():
    doc = yaml.safe_load(read("docker-compose.yaml"))
    v = compose_validator()
    errors = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in v.iter_errors(doc)]
    assert not errors, "\n".join(errors)


def test_compose_schema_rejects_a_misspelt_field():
    doc = yaml.safe_load(read("docker-compose.yaml"))
    doc["services"]["envoy"]["healthcheck"]["retires"] = 3
    assert list(compose_validator().iter_errors(doc))


# ---- Dockerfile ----------------------------------------------------------------


def dockerfile_instructions():
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def dockerignore_patterns():
    pats = [p.strip() for p in read(".dockerignore").splitlines() if p.strip() and not p.startswith("#")]
    # Exceptions would need Docker's full matcher; keeping the file without them
    # keeps this simple one right.
    assert not [p for p in pats if p.startswith("!")], "negated .dockerignore patterns are not supported by this check"
    return [p.lstrip("/") for p in pats]


def ignored(rel, patterns):
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for p in patterns:
        for pre in prefixes:
            if fnmatch.fnmatchcase(pre, p):
                return True
            if p.startswith("**/") and fnmatch.fnmatchcase(pre.split("/")[-1], p[3:]):
                return True
    return False


def test_dockerfile_copies_files_that_exist_and_are_not_ignored():
    patterns = dockerignore_patterns()
    copies = [args.split() for word, args in dockerfile_instructions() if word == "COPY" and "--from=" not in args]
    assert copies, "no COPY from the build context found"
    for args in copies:
        srcs = [a for a in args[:-1] if not a.startswith("--")]
        for src in srcs:
            rel = os.path.normpath(src)
            assert os.path.exists(repo_path(rel)), f"COPY {src}: no such file in the repository"
            if rel != ".":
                assert not ignored(rel, patterns), f"COPY {src}: excluded by .dockerignore"
    # What the build runs from the context copied with `COPY . .`.
    for needed in ("go.mod", "go.sum", "cmd/extproc/main.go", "test/mcpserver/main.go", "internal", "envoy/envoyconfig.go"):
        assert os.path.exists(repo_path(needed)) and not ignored(needed, patterns), f"{needed}: needed by the build, excluded by .dockerignore"


def test_dockerignore_keeps_tools_and_outputs_out_of_the_context():
    patterns = dockerignore_patterns()
    for path in (".tools/bin/envoy", "test/tsclient/node_modules/x", ".git", "bench/results/run.txt", "processor.test", "extproc"):
        assert ignored(path, patterns), f"{path} would be sent to the Docker build"


def test_images_run_as_numeric_non_root_user():
    users = [args for word, args in dockerfile_instructions() if word == "USER"]
    assert users and all(u == "65532:65532" for u in users), users


# ---- flags of the binaries -------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin")
    bins = {}
    for name, pkg in (("extproc", "./cmd/extproc"), ("mcpserver", "./test/mcpserver")):
        path = str(out / name)
        r = subprocess.run(["go", "build", "-o", path, pkg], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"go build {pkg}:\n{r.stderr}"
        bins[name] = path
    return bins


@pytest.fixture(scope="session")
def extproc_bin(built):
    return built["extproc"]


@pytest.fixture(scope="session")
def extproc_interface(extproc_bin):
    """The flags and environment variables `extproc --help` documents."""
    r = subprocess.run([extproc_bin, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    flags = set(re.findall(r"^  --([a-z0-9-]+) \(env [A-Z0-9_]+", r.stdout, re.M))
    env = set(re.findall(r"\(env ([A-Z0-9_]+)", r.stdout)) | set(re.findall(r"^([A-Z][A-Z0-9_]+), if set", r.stdout, re.M))
    assert {"config", "grpc-addr", "admin-addr"} <= flags, r.stdout
    assert {"REDIS_URL", "EXTPROC_IDENTITY_KEY"} <= env, r.stdout
    return flags, env


def flag_names(args):
    return [a[2:].split("=")[0] for a in args if a.startswith("--")]


def extproc_uses(rendered):
    """(where, args, env names) of every place that starts extproc."""
    uses = []
    compose = yaml.safe_load(read("docker-compose.yaml"))["services"]["extproc"]
    uses.append(("docker-compose.yaml", compose["command"], list(compose.get("environment", {}))))
    in_extproc_stage = False
    for word, args in dockerfile_instructions():
        if word == "FROM":
            in_extproc_stage = args.endswith(" AS extproc")
        elif word == "ENV" and in_extproc_stage:
            uses.append(("Dockerfile ENV", [], [kv_.split("=")[0] for kv_ in shlex.split(args)]))
    sources = [(k, d) for k, docs in rendered.items() for d in docs]
    sources += [("envoy/istio/extproc.yaml", d) for d in load_docs(read("envoy/istio/extproc.yaml"))]
    for where, d in sources:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if "mcp-ratelimit/extproc" in c["image"]:
                uses.append((f"{where}: Deployment/{d['metadata']['name']}", c.get("args", []), [e["name"] for e in c.get("env", [])]))
    return uses


def test_extproc_flags_and_variables_set_anywhere_are_real(rendered, extproc_interface):
    flags, env = extproc_interface
    uses = extproc_uses(rendered)
    assert len(uses) >= 5, uses  # compose, Dockerfile, three renders, envoy/istio
    for where, args, names in uses:
        unknown = [f for f in flag_names(args) if f not in flags]
        assert not unknown, f"{where}: extproc has no flag {unknown}"
        unknown = [n for n in names if n not in env]
        assert not unknown, f"{where}: extproc reads no variable {unknown}"


def test_demo_server_flags_set_anywhere_are_real(built):
    r = subprocess.run([built["mcpserver"], "-help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"^  -([a-z0-9-]+)", r.stderr + r.stdout, re.M))
    assert {"addr", "stateless"} <= known, r.stderr
    uses = [("docker-compose.yaml", yaml.safe_load(read("docker-compose.yaml"))["services"]["mcp-server"]["command"])]
    for word, args in dockerfile_instructions():
        if word == "ENTRYPOINT" and "/mcpserver" in args:
            uses.append(("Dockerfile ENTRYPOINT", json.loads(args)[1:]))
    assert len(uses) == 2, uses
    for where, args in uses:
        unknown = [f for f in flag_names(args) if f not in known]
        assert not unknown, f"{where}: the demo server has no flag {unknown}"


def shipped_policies(rendered):
    compose = yaml.safe_load(read("docker-compose.yaml"))
    yield "docker-compose.yaml configs.policy", compose["configs"]["policy"]["content"]
    yield "deploy/base ConfigMap extproc-policy", find(rendered["deploy/base"], "ConfigMap", "extproc-policy")["data"]["policy.yaml"]
    yield "envoy/istio/extproc.yaml ConfigMap", find(load_docs(read("envoy/istio/extproc.yaml")), "ConfigMap", "extproc-policy")["data"]["policy.yaml"]


def test_every_shipped_policy_passes_check_config(rendered, extproc_bin, tmp_path):
    for i, (where, text) in enumerate(shipped_policies(rendered)):
        p = tmp_path / f"policy{i}.yaml"
        p.write_text(text)
        r = subprocess.run([extproc_bin, "check-config", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{where}: extproc check-config:\n{r.stdout}{r.stderr}"


# ---- Envoy Gateway: the quota headers of allowed answers -------------------------


def test_gateway_adds_the_quota_headers_of_envoy_yaml(rendered):
    # envoy/gateway/quota-headers.yaml patches the ClientTrafficPolicy; the result
    # must pass the CRD and add what envoy/envoy.yaml adds, name for name.
    ctp = find(rendered["deploy/overlays/envoy-gateway"], "ClientTrafficPolicy", "mcp-client-traffic")
    errors = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in crd_validator(ctp).iter_errors(ctp)]
    assert not errors, "\n".join(errors)
    (envoy,) = load_docs(read("envoy/envoy.yaml"))
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    want = [(h["header"]["key"], h["header"]["value"]) for h in hcm["route_config"]["virtual_hosts"][0]["response_headers_to_add"]]
    got = [(h["name"], h["value"]) for h in ctp["spec"]["headers"]["lateResponseHeaders"]["add"]]
    assert got == want
    # Envoy Gateway's own check of a header value, beyond the CRD
    # (internal/gatewayapi HeaderValueRegexp): a value failing it is dropped.
    for name, value in got:
        assert re.fullmatch(r"[!-~]+([\t ]?[!-~]+)*", value), f"{name}: {value!r}"
    # The patch keeps the policy's other settings.
    assert ctp["spec"]["connection"]["bufferLimit"] == "4Mi"
