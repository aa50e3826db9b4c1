# The plantwatch monitor image (used by docker-compose.yml as service `monitor`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY models ./models
COPY alerts ./alerts
RUN pip install . && useradd --create-home --uid 10001 plantwatch \
    && mkdir -p /models /data && chown plantwatch /models /data
USER plantwatch
EXPOSE 9108
ENTRYPOINT []
CMD ["plantwatch", "--help"]
