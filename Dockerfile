# The Shoal server. Build: docker build -t shoal .   Run: see docker-compose.yml
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lake ./lake
COPY api ./api
COPY sdk ./sdk
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 shoal
USER shoal

ENV SHOAL_HOST=0.0.0.0 \
    SHOAL_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["shoal", "serve"]
