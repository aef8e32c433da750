#!/usr/bin/env bash
# Python for the inference-capture tests (issue 5): pytest for sdk/python, and the real model servers the proxy
# is tested against — MLServer with mlserver-sklearn (Open Inference Protocol v2) and MLflow (mlflow models serve),
# with scikit-learn for the model. Idempotent: installs only what is missing.
set -euo pipefail
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-pip python3-venv
fi
missing=()
for spec in pytest:pytest cryptography:cryptography numpy:numpy sklearn:scikit-learn mlflow:mlflow mlserver:mlserver mlserver_sklearn:mlserver-sklearn; do
  mod=${spec%%:*} pkg=${spec#*:}
  python3 -c "import $mod" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  python3 -m pip install -q "${missing[@]}" || python3 -m pip install -q --break-system-packages "${missing[@]}"
fi
command -v mlserver >/dev/null && command -v mlflow >/dev/null
