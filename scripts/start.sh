#!/usr/bin/env bash
# The first README command: set up, load the Hanyin demo, and run the whole platform on
# the embedded default (SQLite under var/, tasks in-process, images under var/storage).
# DATABASE_URL and CELERY_BROKER_URL switch it to PostgreSQL and Celery workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc:fonts-wqy-zenhei
bash scripts/build-viewer.sh
mkdir -p var
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
.venv/bin/python manage.py seed_hanyin --with-images
exec .venv/bin/python manage.py platform "$@"
