#!/bin/sh
# The image's build steps (the Dockerfile runs each with `sh deploy/build.sh <step>`, and
# tests/test_image_build.py runs them the same way on a clean copy outside Docker):
#   dependencies  the locked runtime packages (+ observability) into $UV_PROJECT_ENVIRONMENT;
#                 only pyproject.toml, uv.lock and this script are present at this step
#   application   static files collected under the production storage. config.settings.build
#                 reads no secret: a clean checkout with no .env builds.
set -eu
unset PROMETHEUS_MULTIPROC_DIR  # nothing is counted at build time, and no file is baked in
case "${1:-}" in
  dependencies)
    uv sync --frozen --no-dev --group observability --no-install-project
    ;;
  application)
    DJANGO_SETTINGS_MODULE=config.settings.build python manage.py collectstatic --no-input -v 0
    ;;
  *)
    echo "usage: sh deploy/build.sh dependencies|application" >&2
    exit 2
    ;;
esac
