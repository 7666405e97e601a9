# customer-voice listener daemon. Build: docker build -t listener .   Run: see deploy/README.md.
# The sentiment model ships inside the package (enrich/models/sentiment), so it is baked into the image:
# nothing is downloaded at run time.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md scheduler.py ./
COPY listener ./listener
COPY connectors ./connectors
COPY enrich ./enrich
COPY storage ./storage
# Wheels for the package and every dependency (with the PostgreSQL extra: psycopg + procrastinate for
# the scale-out mode); the runtime stage installs them without a compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]" tzdata

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    LISTENER_CONFIG=/etc/listener/listener.toml \
    LISTENER_DB=/data/listener.db
RUN groupadd --system --gid 10001 listener \
 && useradd --system --uid 10001 --gid listener --home-dir /data --no-create-home --shell /usr/sbin/nologin listener \
 && mkdir -p /data /etc/listener \
 && chown listener:listener /data
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "customer-voice-listener[postgres]" tzdata && rm -rf /wheels
# Say so at build time if the model file was missing from the build context (the daemon then fetches
# and serves health as usual, logs once that enrichment is off, and retries loading every 5 minutes).
RUN python -c "import enrich.sentiment as s; p = s.MODEL_DIR / 'model.onnx'; \
print('sentiment model baked in:' if p.exists() else 'WARNING: no sentiment model in the image:', p)"
USER listener:listener
WORKDIR /data
VOLUME ["/data"]
# /healthz and /metrics. The daemon binds 127.0.0.1 by default (enough for HEALTHCHECK below); set
# [daemon] health_host = "0.0.0.0" in the config to publish the port (-p 127.0.0.1:8787:8787).
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:8787/healthz', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["listener", "daemon", "--log-format", "json"]
