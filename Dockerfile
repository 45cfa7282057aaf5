# Image of the planr-bus services (compose.yaml). Runs as an unprivileged user.
# tests/test_compose.py checks that it copies every package of pyproject.toml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY planr planr
COPY schemas schemas
COPY producers producers
COPY routing routing
COPY consumers consumers
COPY scenarios scenarios
COPY cli cli
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 planr \
    && install -d -o planr -m 0755 /var/lib/planr/acls
USER planr
ENTRYPOINT []
