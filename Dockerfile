# The operator image. Build context: the repository root.
#   docker build -t taskmaster-operator .
# Tags are pinned; append @sha256:<digest> to freeze the base images completely.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/taskmaster \
 && /opt/taskmaster/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/taskmaster/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="taskmaster-operator" \
      org.opencontainers.image.description="Runs ScheduledTask resources as Kubernetes Jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/taskmaster /opt/taskmaster
ENV PATH=/opt/taskmaster/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A numeric user, so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["taskmaster-operator"]
