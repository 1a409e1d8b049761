import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
application = get_wsgi_application()

# Each web server process says it is alive (the status page, `manage.py alive web`).
from cloudpacs import heartbeat  # noqa: E402  (needs the settings loaded above)

heartbeat.start("web")
