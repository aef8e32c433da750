"""Train a small scikit-learn iris classifier and save it for MLServer (mlserver-sklearn) and for
`mlflow models serve`. Usage: python3 models.py OUTDIR HTTP_PORT GRPC_PORT METRICS_PORT"""
import json
import os
import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

out, http_port, grpc_port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
X, y = load_iris(return_X_y=True, as_frame=True)
X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
model = LogisticRegression(max_iter=500).fit(X, y)

ms = os.path.join(out, "mlserver")
os.makedirs(os.path.join(ms, "iris"), exist_ok=True)
joblib.dump(model, os.path.join(ms, "iris", "model.joblib"))
with open(os.path.join(ms, "iris", "model-settings.json"), "w") as f:
    json.dump({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
with open(os.path.join(ms, "settings.json"), "w") as f:
    json.dump({"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
               "host": "127.0.0.1", "parallel_workers": 0, "debug": False, "load_models_at_startup": True}, f)

import mlflow.sklearn  # noqa: E402  (slow import, only when needed)
from mlflow.models import infer_signature  # noqa: E402

mlflow.sklearn.save_model(model, os.path.join(out, "mlflow"), signature=infer_signature(X, model.predict(X)))
print("ok")
