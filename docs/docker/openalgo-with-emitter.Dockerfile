# OpenAlgo's image (openalgo:latest, built by its docker-compose.yaml) with the emitter installed.
# Build context: the OpenAlgo checkout, holding this project in ./openalgo-forwarder.
FROM openalgo:latest
USER root
COPY openalgo-forwarder /tmp/openalgo-forwarder
RUN /app/.venv/bin/python -m pip install --no-cache-dir /tmp/openalgo-forwarder \
    && rm -rf /tmp/openalgo-forwarder \
    && mkdir -p /run/openalgo-forwarder \
    && chown appuser:appuser /run/openalgo-forwarder
USER appuser
