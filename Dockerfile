# syntax=docker/dockerfile:1
# One image for the three services and their background workers (deploy/README.md says how they are run):
#   docker build -t clientela .
#   python -m services.<name>            the API (with its consumers and outbox relay unless CLIENTELA_RUN_WORKERS=false)
#   python -m services.<name>.consumer   the background side alone (consumers, relay, workers)
#   python -m shared.topics              create the Kafka topics;  alembic -c services/<name>/alembic.ini upgrade head
# <name> is ingest, profile or segmentation. The image sets no secret: give CLIENTELA_SECRET_KEY and each
# service's *_DATABASE_URL at run time.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The uv that deploy/uv.sh pins, from PyPI.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# The locked dependencies first: this layer changes only with uv.lock.
COPY pyproject.toml uv.lock README.md .python-version ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-install-project
# Then the project itself (the `clientela` command for ops work comes with it).
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev \
    && python -m compileall -q shared services cli

FROM ${PYTHON_IMAGE}
# Services bind every interface inside a container (their default, 127.0.0.1, is for a developer's machine).
# Uploaded import files go to /data/imports: share that folder between every ingest process (API replicas
# and the consumer), since the API stores an upload and the import worker of any process may take the job.
# Without CLIENTELA_SECRET_KEY the services would create a secret in CLIENTELA_SECRET_KEY_FILE; this path
# cannot be created by the service user, so a container started without the secret refuses to seal or
# hash anything instead of inventing a secret of its own (mount the secret there, or set the variable).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INGEST_HOST=0.0.0.0 \
    PROFILE_HOST=0.0.0.0 \
    SEGMENTATION_HOST=0.0.0.0 \
    INGEST_IMPORT_DIR=/data/imports \
    CLIENTELA_SECRET_KEY_FILE=/run/secrets/clientela_secret_key
RUN groupadd --system --gid 10001 clientela \
    && useradd --system --uid 10001 --gid clientela --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin clientela \
    && mkdir -p /data/imports \
    && chown -R clientela:clientela /data
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# ingest, profile, segmentation; 9100: the standalone consumer's metrics (CLIENTELA_METRICS_PORT).
EXPOSE 8001 8002 8003 9100
CMD ["python", "-m", "services.ingest"]
