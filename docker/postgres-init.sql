-- Run once, when compose's postgres starts on an empty volume: Optuna's studies get a database of
-- their own beside MLflow's (OPTUNA_STORAGE=postgresql://mlflow@postgres:5432/optuna).
CREATE DATABASE optuna OWNER mlflow;
