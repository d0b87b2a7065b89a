# The code location image: the same pinned install as `make test` (constraints.txt, extra
# `deploy`, which brings dagster-docker and dagster-k8s for the run launchers and the k8s step
# executor, and dagster-celery for the Celery workers), run as a non-root user. Its default command serves the code location over gRPC; the webserver and
# daemon services of docker-compose.yaml reuse it with another command, and the Docker and
# Kubernetes run launchers start each run in it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home

RUN useradd --create-home --uid 10001 cron \
    && mkdir -p /opt/dagster/home /opt/dagster/data /opt/cron_pipelines \
    && chown -R cron /opt/dagster && chmod -R go= /opt/dagster
WORKDIR /opt/cron_pipelines

COPY constraints.txt pyproject.toml README.md ./
COPY cron_pipelines ./cron_pipelines
RUN pip install -c constraints.txt '.[deploy]'
COPY deploy ./deploy
# The instance: deploy/dagster.yaml plus the Docker run launcher (PostgreSQL from DAGSTER_PG_*).
COPY --chown=cron deploy/dagster.docker.yaml /opt/dagster/home/dagster.yaml

USER cron
# umask 077 for every process, whatever command the compose file or a launcher gives.
ENTRYPOINT ["/opt/cron_pipelines/deploy/container-entrypoint.sh"]
EXPOSE 4266
CMD ["dagster", "code-server", "start", "-m", "cron_pipelines.definitions", "-a", "defs", \
     "--location-name", "cron_pipelines", "-h", "0.0.0.0", "-p", "4266"]
