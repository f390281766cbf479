-- One PostgreSQL server, three databases: MLflow's backend store, MLflow's basic-auth users and
-- permissions, and Prefect's. Run once by the postgres image on an empty volume (and by
-- tests/infra against a throwaway server).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
