#!/usr/bin/env bash
# Installs what the MLflow connector's integration test needs (internal/mlflow): an MLflow 3 server and its Python
# client with scikit-learn, to train and register real models. Idempotent: does nothing when they are present.
set -euo pipefail
if python3 -c 'import mlflow, sklearn, sys; sys.exit(0 if int(mlflow.__version__.split(".")[0]) >= 3 else 1)' 2>/dev/null \
  && command -v mlflow >/dev/null; then
  echo "mlflow $(python3 -c 'import mlflow; print(mlflow.__version__)') present"
  exit 0
fi
python3 -m pip install --quiet 'mlflow>=3,<4' scikit-learn
