"""``python -m twisthost check site.py`` works like the ``twisthost`` command."""

from .cli import main

raise SystemExit(main())
