#!/usr/bin/env bash
# The second README command: set up and run the whole test suite. With DATABASE_URL and
# CELERY_BROKER_URL set (as .ci/run sets them) it runs on PostgreSQL and a real Celery
# worker over Redis; without them on SQLite, with the worker tests reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
YUNYING_EXTRAS=test bash scripts/setup.sh \
  storescu:dcmtk \
  dciodvfy:dicom3tools \
  chromium:chromium \
  haproxy:haproxy \
  /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk \
  /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc:fonts-wqy-zenhei
bash scripts/build-viewer.sh
.venv/bin/ruff check .
.venv/bin/mypy cloudpacs facilities consults billing dicomnode
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null
# Three pytest-xdist workers on two cores: many tests wait on sockets, processes and
# sleeps, so a third worker uses what the other two leave idle (README, "The test suite");
# each module runs on one worker, the seeded demo's tests together (conftest.py). Later
# arguments win: `bash scripts/test.sh -n 0` runs in one process.
exec .venv/bin/python -m pytest -n 3 --dist loadgroup "$@"
