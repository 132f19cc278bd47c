# syntax=docker/dockerfile:1
# One image for all four services:  docker run IMAGE services.orders|payments|membership|analytics
# and for the one-shot database bootstrap (see docker-compose.yml and deploy/k8s/base/db-bootstrap.yaml).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve and install the project into a self-contained venv -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only for a dependency that ships no wheel for this platform; they stay in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (their own layer, reused while pyproject.toml is unchanged) ...
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --upgrade pip setuptools wheel \
 && pip install -r /tmp/requirements.txt
# ... then the project itself: services/ and the committed generated gRPC code in gen/.
# (seeds/ is a local-development tool and not part of the image.)
COPY services ./services
COPY gen ./gen
RUN pip install --no-deps . \
 && python -c "import services.orders, services.payments, services.membership, services.analytics, marketplace"

# ---- runtime: the venv on a clean slim image, no compilers, no source tree, non-root -------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# REST 8000-8003 (orders, payments, membership, analytics); gRPC 50052 (payments), 50053 (membership).
# Each service binds <NAME>_HTTP_HOST (default 127.0.0.1): set it to 0.0.0.0 in a container.
EXPOSE 8000 8001 8002 8003 50052 50053
ENTRYPOINT ["python", "-m"]
CMD ["services.orders"]
