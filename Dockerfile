# One image for web, worker, beat and the provider simulator; docker-compose.yml picks the command.
# The build needs no secret: deploy/build.sh runs each step (and tests/test_image_build.py runs
# them the same way on a clean checkout, outside Docker). .dockerignore keeps .env, .venv and
# .data out of the context.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH DJANGO_SETTINGS_MODULE=config.settings.production \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/clearhouse/metrics
RUN pip install --no-cache-dir uv && useradd --create-home --uid 10001 app \
    && mkdir -p /var/lib/clearhouse/metrics /var/lib/clearhouse/simulator \
       /var/lib/clearhouse/ledger-checkpoints /var/lib/clearhouse/evidence && chown -R app /var/lib/clearhouse
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY deploy/build.sh deploy/build.sh
RUN sh deploy/build.sh dependencies
COPY . .
RUN sh deploy/build.sh application
USER app
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
