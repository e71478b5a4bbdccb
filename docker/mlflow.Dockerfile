# MLflow's tracking server with the basic-auth app's dependencies (Flask-WTF and friends), the
# PostgreSQL driver (SQLAlchemy 2.1 maps postgresql:// to psycopg 3) and boto3 for the S3 artifact proxy.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9" "boto3==1.43.117"
