#!/usr/bin/env bash
# System tools the pipeline and its tests need beside Python: RAR backends for HMDB51/UCF101
# archives (unar, bsdtar); git; the PostgreSQL server that tests/infra runs MLflow and Prefect on
# (Debian keeps initdb/postgres in /usr/lib/postgresql/<version>/bin, off PATH); a Compose
# implementation whose `config` command validates infra/docker-compose.yml (no Docker engine needed).
# Installed only when missing; needs root (or sudo) and Debian's apt.
set -euo pipefail
missing=()
command -v unar >/dev/null 2>&1 || missing+=(unar)
command -v bsdtar >/dev/null 2>&1 || missing+=(libarchive-tools)
command -v git >/dev/null 2>&1 || missing+=(git)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql)
fi
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup-system: installing ${missing[*]} with apt-get"
$SUDO apt-get update -qq
# --no-install-recommends: docker-compose recommends the whole Docker engine, which nothing here uses.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
