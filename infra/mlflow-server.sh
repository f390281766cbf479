#!/bin/sh
# MLflow tracking server WITH its basic-auth app: what infra/docker-compose.yml runs (and what the
# infra tests run against a real PostgreSQL). Any server that listens beyond loopback must require a
# login: MLflow's registry can load and serve arbitrary model code.
#
#   infra/mlflow-server.sh --host 0.0.0.0 --port 5000 --artifacts-destination s3://mlflow/ --serve-artifacts
#
# Everything secret comes from the environment, nothing from a file in git:
#   MLFLOW_BACKEND_STORE_URI        runs, metrics, registry   e.g. postgresql://user:pw@postgres:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI        users and permissions     e.g. postgresql://user:pw@postgres:5432/mlflow_auth
#   MLFLOW_AUTH_ADMIN_USERNAME      the admin account created on the first start (when the auth DB has no users)
#   MLFLOW_AUTH_ADMIN_PASSWORD
#   MLFLOW_FLASK_SERVER_SECRET_KEY  CSRF key of the login/sign-up pages (same value on every replica)
# Other `mlflow server` options are passed through. Clients log in with MLFLOW_TRACKING_USERNAME /
# MLFLOW_TRACKING_PASSWORD. The admin password is only used on the first start: change it later with
# the update-password API, not here.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (see infra/README.md)}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (see infra/README.md)}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME (see infra/README.md)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (see infra/README.md)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (see infra/README.md)}"

# The auth app reads its database from an ini file only; write one the other users cannot read.
umask 077
config="$(mktemp "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")"
cat >"$config" <<EOF
[mlflow]
# authenticated users may read everything; writing needs a grant (the admin has all of them)
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
# Remember a verified login for 60 s instead of re-hashing the password (PBKDF2) on every request:
# a model upload is ~100 requests, ~0.1 s of CPU each without it. Cost: a changed or revoked
# password keeps working for up to 60 s on the workers that did not handle the change.
auth_cache_ttl_seconds = 60
EOF
export MLFLOW_AUTH_CONFIG_PATH="$config"
exec mlflow server --app-name basic-auth "$@"
