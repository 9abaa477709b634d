# streamlearn service image (CPU).
#   docker build -t streamlearn .
#   docker run --rm -p 8080:8080 -e STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=broker:9092 streamlearn
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch first, in its own layer: it is by far the largest dependency and
# the CPU wheel avoids gigabytes of CUDA libraries the service does not use.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4,<3"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamlearn ./streamlearn
COPY config ./config
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin streamlearn \
    && mkdir -p /var/lib/streamlearn/checkpoints \
    && chown -R streamlearn /var/lib/streamlearn

# In a container the API must listen on all interfaces; checkpoints go to a volume.
ENV STREAMLEARN_API__HOST=0.0.0.0 \
    STREAMLEARN_CHECKPOINT__DIR=/var/lib/streamlearn/checkpoints
VOLUME ["/var/lib/streamlearn/checkpoints"]

USER streamlearn
EXPOSE 8080
ENTRYPOINT ["streamlearn"]
CMD ["run", "--config", "/app/config/default.yaml"]
