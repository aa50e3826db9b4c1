# The plantwatch monitor image (service `monitor` in docker-compose.yml).
#
#   docker build -t plantwatch .
#   docker run --rm plantwatch plantwatch --help
#
# `pip install .` takes torch from PyPI as it is; to get the smaller CPU-only wheels, pass
# PyTorch's CPU wheel index: docker build --build-arg TORCH_INDEX_URL=<that index> .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY stream ./stream
COPY models ./models
COPY alerts ./alerts
COPY plantwatch ./plantwatch
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} . \
    && useradd --create-home --uid 10001 plantwatch \
    && mkdir -p /models /data \
    && chown plantwatch /models /data
USER plantwatch
EXPOSE 9108
# Inside a container the metrics endpoint must bind beyond loopback to be scraped.
ENV PLANTWATCH_METRICS__HOST=0.0.0.0
CMD ["plantwatch", "run", "--config", "/etc/plantwatch/plantwatch.toml", "--model", "/models/current"]
