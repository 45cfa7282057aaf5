# Image of the planr-bus services (compose.yaml). Runs as an unprivileged user.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY planr planr
COPY producers producers
COPY schemas schemas
COPY routing routing
COPY consumers consumers
RUN pip install --no-cache-dir . && useradd --system --uid 10001 planr
USER planr
ENTRYPOINT []
