# MLflow's tracking server with the basic-auth app's dependencies (Flask-WTF and friends).
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2"
