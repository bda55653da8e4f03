"""The project's ASGI entry (Django's ASGIHandler), for tests/test_asgi.py."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
