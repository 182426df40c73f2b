# roomlogs: one image for every process (`roomlogs worker`, `roomlogs api serve`, `roomlogs migrate`, ...).
# Built by docker-compose.yml; the context is limited by .dockerignore to what `pip install .` needs.
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/roomlogs
COPY . .
# every roomlogs process: the worker's and the API's extras (the bare package is the publisher SDK)
RUN /opt/roomlogs/bin/pip install '.[all]'


FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="roomlogs" \
      org.opencontainers.image.description="Chat-room activity logs: Kafka -> validation -> day-partitioned PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 roomlogs \
    && useradd --system --uid 10001 --gid roomlogs --home-dir /var/lib/roomlogs --create-home \
       --shell /usr/sbin/nologin roomlogs

COPY --from=build /opt/roomlogs /opt/roomlogs

ENV PATH=/opt/roomlogs/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/roomlogs

# worker /metrics and /health (ROOMLOGS_METRICS_PORT), query API (ROOMLOGS_API_PORT)
EXPOSE 9308 8080

ENTRYPOINT ["roomlogs"]
CMD ["--help"]
