# syntax=docker/dockerfile:1
# One image for all four services:  docker run IMAGE services.orders|payments|membership|analytics
# and for the one-shot database bootstrap (see docker-compose.yml and deploy/k8s/base/db-bootstrap.yaml).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the locked runtime dependencies and the project in a self-contained venv -----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, exactly as requirements/runtime.txt pins them, each file checked against
# its hash (their own layer, reused while the lock is unchanged). Wheels only: every package
# in the lock ships one for CPython 3.11 on manylinux x86_64 and aarch64, so no compiler is
# installed, and a package that stops shipping one fails the build here instead of being
# built. No `local` extra: the embedded Postgres, nats-server and protoc stay out.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes --only-binary=:all: -r requirements/runtime.txt
# ... then the project itself: services/, the committed generated gRPC code in gen/, and
# seeds/ (docker-compose.yml's one-shot `seed` job fills an empty catalog with it).
COPY pyproject.toml ./
COPY services ./services
COPY seeds ./seeds
COPY gen ./gen
RUN pip install --no-deps . \
 && python -c "import services.orders, services.payments, services.membership, services.analytics, marketplace, seeds.seed" \
 && pip uninstall --yes setuptools pip

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
