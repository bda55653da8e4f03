"""The project's WSGI entry, wrapped in wsgiref.validate like every test app."""

import os
from wsgiref.validate import validator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = validator(get_wsgi_application())
