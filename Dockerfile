# syntax=docker/dockerfile:1
# The Lookout image: gunicorn serving app.wsgi:app as PID 1, as UID/GID 10001, on a read-only root
# filesystem (writes go to /tmp and, with several workers, /var/lib/lookout/metrics).
#
#   docker build --build-arg VERSION=0.1.0 --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t lookout:0.1.0 .
#   (or `make image`)
#
# Only the app's dependencies go in, exactly as uv.lock pins them (hashes checked, no resolver at
# build time): Pulumi, Locust and the test tools stay out.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv with the locked dependencies, then the app as a plain (non-editable) install
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/lookout \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
# uv, pinned with its hashes (the same file `make venv` bootstraps from).
COPY .ci/bootstrap/requirements.txt /tmp/uv-requirements.txt
RUN pip install --require-hashes --no-deps --requirement /tmp/uv-requirements.txt
WORKDIR /src
# Dependencies first, from the lock alone, into a new venv: this layer is rebuilt only when they change. --locked
# refuses a lock that pyproject.toml has moved away from; the build group is setuptools, which
# builds the app below without fetching anything.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project --group build
COPY README.md ./
COPY app ./app
# uv compiles the bytecode here, so the read-only image never needs to write .pyc files; the
# build backend leaves with the build.
RUN uv pip install --python /opt/lookout/bin/python --no-deps --no-build-isolation . \
    && uv pip uninstall --python /opt/lookout/bin/python setuptools \
    && uv pip check --python /opt/lookout/bin/python \
    && /opt/lookout/bin/python -c "import app, app.config"

# --- runtime: the virtualenv on the same slim base, no compilers, no build files ---------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.0.0
ARG GIT_COMMIT=unknown
ARG SOURCE=https://github.com/lookout/lookout
LABEL org.opencontainers.image.title="lookout" \
      org.opencontainers.image.description="The Lookout users API (Flask, gunicorn)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 lookout \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin lookout \
    && install --directory --owner 10001 --group 10001 --mode 0750 /var/lib/lookout/metrics
COPY --from=build /opt/lookout /opt/lookout
ENV PATH=/opt/lookout/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOOKOUT_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    METRICS_PORT=9100 \
    GIT_COMMIT=${GIT_COMMIT}
# No source tree at run time: the app is imported from the virtualenv.
WORKDIR /opt/lookout
USER 10001:10001
EXPOSE 8000 9100
# Exec form: gunicorn is PID 1 and receives SIGTERM itself. The migration Job runs
# `flask --app app db upgrade` with the same image.
CMD ["gunicorn", "-c", "python:app.gunicorn_conf", "app.wsgi:app"]
