# This project's commands without training (no torch): what the release Job runs on Kubernetes
# (deploy/k8s/base/release-job.yaml), and `cifar10 registry sync --fleet` anywhere else.
# Build from the repository root: docker build -f docker/cifar10.Dockerfile -t cifar10-triton/cifar10 .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md params.yaml ./
COPY commands commands
COPY common common
COPY registry registry
COPY release release
COPY serving serving
COPY client client
COPY monitoring monitoring
COPY mlmodel mlmodel
COPY export export
COPY training training
COPY optimize optimize
COPY stores stores
COPY tuning tuning
RUN pip install --no-cache-dir ".[serve,client]" "numpy<2"
ENTRYPOINT []
