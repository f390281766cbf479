#!/usr/bin/env bash
# System tools the pipeline needs beside Python: RAR backends for HMDB51/UCF101 archives
# (unar, bsdtar). Installed only when missing; needs root (or sudo) and Debian's apt.
set -euo pipefail
missing=()
command -v unar >/dev/null 2>&1 || missing+=(unar)
command -v bsdtar >/dev/null 2>&1 || missing+=(libarchive-tools)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup-system: installing ${missing[*]} with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
