"""The Kubernetes manifests of ``infra/kuberay/``, validated without a cluster.

Three checks per manifest: KubeRay's own fields against :mod:`tests.infra.kuberay_schema`; every pod
template (head, worker groups, RayJob submitter) and every core object (the NetworkPolicy) against
the real Kubernetes OpenAPI schemas, strict (unknown fields fail), via ``kubernetes-validate``; and
the "no one gets in by default" rules: Ray token authentication on every Ray container and the
submitter, the head reachable inside the cluster only, all pods covered by the NetworkPolicy.
Each check is shown to fail on a broken copy.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.common.processes import REPO
from tests.infra.kuberay_schema import SCHEMAS

KUBERAY = REPO / "infra" / "kuberay"
K8S_VERSION = "1.31"
"""Kubernetes API version the pod templates are checked against (any supported by kubernetes-validate)."""
PART_OF = ("app.kubernetes.io/part-of", "madapter")
"""The label networkpolicy.yaml admits; every madapter pod carries it."""
PRIVATE_SERVICE_TYPES = (None, "ClusterIP")


def manifests() -> dict[str, dict[str, Any]]:
    """Every object in ``infra/kuberay/*.yaml``, by ``<file>:<kind>``."""
    found = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{path.name}:{doc['kind']}"] = doc
    return found


CLUSTER_KEY = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}
"""Where each kind holds its Ray cluster's spec (``None``: the spec is the cluster's)."""


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    key = CLUSTER_KEY[obj["kind"]]
    return obj["spec"] if key is None else obj["spec"].get(key, obj["spec"])


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, pod template, role) of a RayCluster, RayJob or RayService; role is head, worker or submitter."""
    spec = obj["spec"]
    cluster = cluster_spec(obj)
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in spec:
        yield "spec.submitterPodTemplate", spec["submitterPodTemplate"], "submitter"
    key = CLUSTER_KEY[obj["kind"]]
    prefix = "spec" if key is None else f"spec.{key}"
    yield f"{prefix}.headGroupSpec.template", cluster["headGroupSpec"]["template"], "head"
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        yield f"{prefix}.workerGroupSpecs[{i}].template", group["template"], "worker"


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Schema problems: KubeRay fields (our schema) and pod templates / core objects (Kubernetes')."""
    errors = []
    if obj["kind"] in SCHEMAS:
        validator = jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]])
        errors += [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        if errors:
            return errors
        for where, template, _ in pod_templates(obj):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                            "template": template}
            try:
                kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{where}.{'.'.join(map(str, list(err.path)[1:]))}: {err.message}")
    else:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{'.'.join(map(str, err.path))}: {err.message}")
    return errors


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def exposure_problems(objects: dict[str, dict[str, Any]]) -> list[str]:
    """Breaches of "no one gets in by default" in the Ray manifests (empty when there are none)."""
    problems = []
    policies = [o for o in objects.values() if o["kind"] == "NetworkPolicy"]
    admitted = [p["spec"]["podSelector"].get("matchLabels", {}) for p in policies]
    for name, obj in objects.items():
        if obj["kind"] not in SCHEMAS:
            continue
        cluster = cluster_spec(obj)
        head = cluster["headGroupSpec"]
        serve_service = obj["spec"].get("serveService", {}).get("spec", {})
        if serve_service.get("type") not in PRIVATE_SERVICE_TYPES:
            problems.append(f"{name}: serveService type {serve_service['type']} exposes the model server outside "
                            "the cluster")
        if head.get("serviceType") not in PRIVATE_SERVICE_TYPES:
            problems.append(f"{name}: head serviceType {head['serviceType']} exposes Ray outside the cluster")
        if head.get("enableIngress"):
            problems.append(f"{name}: enableIngress exposes the Ray dashboard outside the cluster")
        token_by_operator = cluster.get("authOptions", {}).get("mode") == "token"
        for where, template, role in pod_templates(obj):
            labels = template.get("metadata", {}).get("labels", {})
            if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in admitted):
                problems.append(f"{name}: {where}: pods not selected by any NetworkPolicy")
            if labels.get(PART_OF[0]) != PART_OF[1]:
                problems.append(f"{name}: {where}: pods lack the label {PART_OF[0]}={PART_OF[1]}")
            if token_by_operator:
                continue
            for container in template["spec"]["containers"][:1]:  # KubeRay's Ray container is the first
                env = _env(container)
                mode = env.get("RAY_AUTH_MODE", {}).get("value")
                token_ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
                if mode != "token" or not token_ref:
                    problems.append(f"{name}: {where}: {role} container '{container['name']}' runs without Ray "
                                    "token authentication (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from a Secret)")
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                problems.append(f"NetworkPolicy {policy['metadata']['name']}: an ingress rule without 'from' "
                                "admits every source")
    return problems


def test_manifests_are_valid() -> None:
    objects = manifests()
    assert {"raycluster.yaml:RayCluster", "rayjob.yaml:RayJob", "rayservice.yaml:RayService",
            "networkpolicy.yaml:NetworkPolicy"} <= set(objects)
    for name, obj in objects.items():
        assert schema_errors(obj) == [], name


def test_manifests_expose_nothing() -> None:
    assert exposure_problems(manifests()) == []


def _broken(name: str, edit) -> dict[str, Any]:
    obj = copy.deepcopy(manifests()[name])
    edit(obj)
    return obj


@pytest.mark.parametrize("name, edit, expected", [
    ("raycluster.yaml:RayCluster", lambda o: o["spec"].update(workerGroupSpec=o["spec"].pop("workerGroupSpecs")),
     "'workerGroupSpec' was unexpected"),
    ("raycluster.yaml:RayCluster", lambda o: o["spec"]["workerGroupSpecs"][0].update(replicas="two"),
     "'two' is not of type 'integer'"),
    ("rayjob.yaml:RayJob", lambda o: o["spec"].update(submissionMode="K8sMode"), "'K8sMode' is not one of"),
    ("raycluster.yaml:RayCluster",
     lambda o: o["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="6379"),
     "'6379' is not of type 'integer'"),
    ("rayjob.yaml:RayJob",
     lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(
         volumeMount=[]), "'volumeMount' was unexpected"),
    ("rayjob.yaml:RayJob", lambda o: o["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop("name"),
     "'name' is a required property"),
    ("networkpolicy.yaml:NetworkPolicy", lambda o: o["spec"].update(policyTypes="Ingress"),
     "'Ingress' is not of type 'array'"),
    ("rayservice.yaml:RayService", lambda o: o["spec"].update(rayClusterSpec=o["spec"].pop("rayClusterConfig")),
     "'rayClusterConfig' is a required property"),
    ("rayservice.yaml:RayService",
     lambda o: o["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"]["spec"].update(toleration=[]),
     "'toleration' was unexpected"),
])
def test_broken_manifest_fails_validation(name: str, edit, expected: str) -> None:
    errors = schema_errors(_broken(name, edit))
    assert any(expected in e for e in errors), errors


def _without_token(obj: dict[str, Any]) -> None:
    env = obj["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if not e["name"].startswith("RAY_AUTH")]


@pytest.mark.parametrize("name, edit, expected", [
    ("raycluster.yaml:RayCluster", lambda o: o["spec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
     "serviceType LoadBalancer"),
    ("raycluster.yaml:RayCluster", lambda o: o["spec"]["headGroupSpec"].update(enableIngress=True), "enableIngress"),
    ("raycluster.yaml:RayCluster", _without_token, "without Ray token authentication"),
    ("rayjob.yaml:RayJob", lambda o: o["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop("env"),
     "submitter container 'ray-job-submitter' runs without Ray token"),
    ("rayjob.yaml:RayJob", lambda o: o["spec"]["rayClusterSpec"]["headGroupSpec"]["template"].pop("metadata"),
     "not selected by any NetworkPolicy"),
    ("networkpolicy.yaml:NetworkPolicy", lambda o: o["spec"]["ingress"][0].pop("from"), "admits every source"),
    ("rayservice.yaml:RayService", lambda o: o["spec"].update(serveService={"spec": {"type": "LoadBalancer"}}),
     "serveService type LoadBalancer"),
    ("rayservice.yaml:RayService",
     lambda o: o["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"].pop("metadata"),
     "not selected by any NetworkPolicy"),
])
def test_exposed_manifest_is_caught(name: str, edit, expected: str) -> None:
    objects = manifests()
    objects[name] = _broken(name, edit)
    problems = exposure_problems(objects)
    assert any(expected in p for p in problems), problems


def test_every_manifest_file_is_checked() -> None:
    """A new manifest file must hold only kinds these tests know how to validate."""
    for path in KUBERAY.glob("*"):
        assert path.suffix == ".yaml", f"{path}: the tests only read *.yaml"
    kinds = {obj["kind"] for obj in manifests().values()}
    assert kinds <= {"RayCluster", "RayJob", "RayService", "NetworkPolicy"} | {"Secret", "Service",
                                                                              "PersistentVolumeClaim"}, kinds
    assert Path(KUBERAY / "networkpolicy.yaml").is_file()


def serve_config() -> dict[str, Any]:
    return yaml.safe_load(manifests()["rayservice.yaml:RayService"]["spec"]["serveConfigV2"])


def test_the_rayservice_serve_config_is_valid_for_ray_serve_and_builds_the_application() -> None:
    """``serveConfigV2`` against Ray Serve's own config schema, and its import path + args really build
    the application of ``python -m madapter serve``, with the deployments the config names."""
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(serve_config())
    (app,) = config.applications
    module, builder = app.import_path.split(":")
    application = getattr(importlib.import_module(module), builder)({**app.args, "params": str(REPO / "params.yaml")})
    ingress = application._bound_deployment
    built = {ingress.name} | {arg._bound_deployment.name for arg in ingress.init_args if hasattr(arg, "_bound_deployment")}
    assert built == {"ingress", "decoder", "classifier"}
    assert {d.name for d in app.deployments} <= built
    assert config.http_options.port == 8000 and app.args["model"] == "models:/madapter@champion"


def test_a_broken_serve_config_fails_validation() -> None:
    from ray.serve.schema import ServeDeploySchema

    broken = serve_config()
    broken["applications"][0]["deployments"][1]["num_replicas"] = "many"
    with pytest.raises(ValueError, match="num_replicas"):
        ServeDeploySchema.model_validate(broken)
