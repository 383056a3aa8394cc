# The forwarder daemon, built from this project's checkout (the build context).
FROM python:3.12-slim
COPY . /src
RUN pip install --no-cache-dir '/src[forwarder]' \
    && rm -rf /src \
    && mkdir -p /run/openalgo-forwarder /var/lib/openalgo-forwarder \
    && chown 1000:1000 /run/openalgo-forwarder /var/lib/openalgo-forwarder
USER 1000:1000
STOPSIGNAL SIGTERM
CMD ["openalgo-forwarder", "run"]
