# journey-stream: `journey run` in a container that starts warm.
#
#   docker build -t journey-stream:0.1.0 .
#   docker run --rm -e JOURNEY_BROKERS=kafka:9092 journey-stream:0.1.0
#
# Every `journey run` flag is also a JOURNEY_* variable; config/kubernetes/journey.yaml
# runs the image as a StatefulSet (README: Operations).
FROM python:3.11-slim-bookworm

# Kernels are compiled into the image at build (`journey compile`), for a generic x86-64
# CPU so that the cache fits every node: a pod scores from its first second. Build with
# --build-arg NUMBA_CPU_NAME=host for the build machine's own CPU (a node with another
# CPU then compiles at start, and says so in one log line; the cache is the runtime
# user's, so a pod compiles once while its container lives).
ARG NUMBA_CPU_NAME=generic
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    NUMBA_CACHE_DIR=/opt/journey/numba-cache

# tini runs as PID 1 and passes SIGTERM on: the kernel gives PID 1 no default signal
# handling, so `journey run` would ignore a stop until its own handler is in place.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/journey/src
COPY pyproject.toml README.md ./
COPY config config
COPY flows flows
COPY operators operators
COPY journey journey
RUN pip install --no-cache-dir . \
    && journey compile \
    && useradd --system --uid 10001 --home-dir /var/lib/journey journey \
    && mkdir -p /var/lib/journey \
    && chown -R journey /var/lib/journey "$NUMBA_CACHE_DIR"

USER 10001
WORKDIR /var/lib/journey
# The recovery store lives on a volume; metrics are served to Prometheus in the cluster.
ENV JOURNEY_RECOVERY_DIR=/var/lib/journey/recovery \
    JOURNEY_METRICS_PORT=9464 \
    JOURNEY_METRICS_ADDR=0.0.0.0
VOLUME /var/lib/journey
# 9464: Prometheus /metrics; 2101: the Bytewax cluster's own traffic between processes
EXPOSE 9464 2101
ENTRYPOINT ["tini", "--", "journey"]
CMD ["run"]
