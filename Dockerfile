# The browser viewer (frontend/) is built with Node.js in its own stage; only the built
# files reach the image.
FROM node:20-bookworm-slim AS viewer
WORKDIR /build/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
RUN npx vite build --logLevel error

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk fonts-wqy-zenhei \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cloudpacs cloudpacs
COPY facilities facilities
COPY consults consults
COPY billing billing
COPY dicomnode dicomnode
RUN pip install --no-cache-dir .
COPY . .
COPY --from=viewer /build/static/viewer static/viewer
RUN STATIC_ROOT=/app/staticfiles python manage.py collectstatic --noinput --verbosity 0
RUN useradd --system --uid 1000 yunying && mkdir -p /data && chown yunying /data
USER yunying
ENV STATIC_ROOT=/app/staticfiles YUNYING_VAR_DIR=/data STORAGE_ROOT=/data/storage
