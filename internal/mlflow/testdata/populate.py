"""Populate an MLflow server the way a data scientist would: train scikit-learn models with MLflow's own
client, log the training data as a dataset input, register two versions and alias the first "champion"."""
import sys

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("credit")
rng = np.random.default_rng(0)
X = pd.DataFrame({"income": rng.normal(50, 10, 300), "debt": rng.normal(10, 3, 300)})
y = (X["income"] - 3 * X["debt"] > 20).astype(int)
data = mlflow.data.from_pandas(X.assign(label=y), source="s3://bank-data/applications-2026-11.parquet",
                               name="applications", targets="label")
for c in (1.0, 0.1):
    with mlflow.start_run(run_name=f"logreg-C{c}"):
        mlflow.log_input(data, context="training")
        model = LogisticRegression(C=c).fit(X, y)
        mlflow.log_param("C", c)
        mlflow.log_metric("accuracy", float(model.score(X, y)))
        mlflow.sklearn.log_model(model, name="model", registered_model_name="credit-model")
MlflowClient().set_registered_model_alias("credit-model", "champion", "1")
