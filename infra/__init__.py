"""Deployment and acceptance tooling around the project: the compose stack, the KubeRay templates, the
MLflow server script (files), and :mod:`infra.gpu_check` (``make gpu-check``, the GPU acceptance check)."""
