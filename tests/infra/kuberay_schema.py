"""JSON schemas (draft 2020-12) of the KubeRay ``ray.io/v1`` RayCluster, RayJob and RayService fields.

Why hand-written: no KubeRay CRD schema can be installed offline (the CRDs ship with the operator's
Helm chart, not on PyPI), and the generated CRD embeds a full copy of the Kubernetes pod schema per
template, 20k+ lines.  This is the part KubeRay itself defines, transcribed from its API types
(``ray-operator/apis/ray/v1/raycluster_types.go``, ``rayjob_types.go`` and ``rayservice_types.go``,
KubeRay 1.1 to 1.6): the
spec objects list every field KubeRay knows (``additionalProperties: false``, so a misspelt key fails
as it would in ``kubectl apply --validate=strict``), with types and enums; fields we do not use are
typed loosely.  The pod templates inside (``template``, ``submitterPodTemplate``) are left open here
and validated against the real Kubernetes schemas by ``kubernetes-validate`` (see test_kuberay.py).
"""

from __future__ import annotations

from typing import Any

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_OBJ = {"type": "object"}
_POD_TEMPLATE = {"type": "object", "required": ["spec"]}  # the rest: kubernetes-validate

_HEAD_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "template": _POD_TEMPLATE,
        "headService": _OBJ,
        "enableIngress": {"type": "boolean"},
        "ingressOptions": _OBJ,
        "resources": _STR_MAP,
        "labels": _STR_MAP,
        "rayStartParams": _STR_MAP,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    },
}

_WORKER_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "template"],
    "properties": {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string", "minLength": 1},
        "replicas": _INT32,
        "minReplicas": _INT32,
        "maxReplicas": _INT32,
        "idleTimeoutSeconds": _INT32,
        "priority": _INT32,
        "resources": _STR_MAP,
        "labels": _STR_MAP,
        "rayStartParams": _STR_MAP,
        "template": _POD_TEMPLATE,
        "scaleStrategy": _OBJ,
        "numOfHosts": _INT32,
    },
}

_AUTH_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": ["disabled", "token"]},
        "secretName": {"type": "string"},
        "enableK8sTokenAuth": {"type": "boolean"},
    },
}

RAY_CLUSTER_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "upgradeStrategy": _OBJ,
        "authOptions": _AUTH_OPTIONS,
        "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": _OBJ,
        "headServiceAnnotations": _STR_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": _OBJ,
        "historyServerOptions": _OBJ,
        "networkPolicy": _OBJ,
        "tlsOptions": _OBJ,
        "headGroupSpec": _HEAD_GROUP,
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+"},
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
    },
}

RAY_JOB_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {**_INT32, "minimum": 1},
        "backoffLimit": {**_INT32, "minimum": 0},
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": _POD_TEMPLATE,
        "metadata": _STR_MAP,
        "clusterSelector": _STR_MAP,
        "submitterConfig": _OBJ,
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionStrategy": _OBJ,
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": _INT32,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "schedule": {"type": "string"},
    },
}

RAY_SERVICE_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rayClusterConfig"],
    "properties": {
        "serveConfigV2": {"type": "string"},  # Serve config YAML: test_kuberay.py checks it with Serve's schema
        "rayClusterConfig": RAY_CLUSTER_SPEC,
        "serveService": _OBJ,
        "upgradeStrategy": _OBJ,
        "rayClusterDeletionDelaySeconds": _INT32,
        "serviceUnhealthySecondThreshold": _INT32,
        "deploymentUnhealthySecondThreshold": _INT32,
        "excludeHeadPodFromServeSvc": {"type": "boolean"},
    },
}

_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}


def resource_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A whole ``ray.io/v1`` object of ``kind`` with ``spec``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "RayCluster": resource_schema("RayCluster", RAY_CLUSTER_SPEC),
    "RayJob": resource_schema("RayJob", RAY_JOB_SPEC),
    "RayService": resource_schema("RayService", RAY_SERVICE_SPEC),
}
"""Schema per KubeRay kind."""
