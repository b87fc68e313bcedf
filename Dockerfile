# The pipeline's image: the code location for a Dagster deployment (dagster-k8s: user code
# deployment and step/run pods) and the `rlhf-curate` CLI. Build from the repo root:
#   docker build -t rlhf-curation:latest .
# Stage tables go to object storage in multi-machine deployments: set STAGE_STORE_URI=s3://...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /opt/rlhf-curation

# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md ./
COPY curation/__init__.py curation/__init__.py
COPY assets/__init__.py assets/__init__.py
COPY pipelines/__init__.py pipelines/__init__.py
COPY expectations/ expectations/
RUN pip install --no-cache-dir .  && pip uninstall -y rlhf-curation

COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p "$DAGSTER_HOME" \
    && printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml" \
    && useradd --create-home --uid 10001 dagster \
    && chown -R dagster "$DAGSTER_HOME"

USER dagster
EXPOSE 4000
# The code server of a dagster-k8s user deployment; `rlhf-curate run` works as a command too.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "pipelines.definitions"]
