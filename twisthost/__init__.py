"""twisthost: WSGI and ASGI apps, virtual hosts, a reverse proxy, static files and .rpy
scripts from one Python config file, served by Twisted.

``site.py`` files import their vocabulary from here.
"""

from .config import ASGI, CGI, HSTS, TLS, WSGI, HealthCheck, Host, Proxy, Redirect, Resource, Scripts, Site, Static
from .errors import ConfigError

__all__ = [
    "ASGI",
    "CGI",
    "TLS",
    "WSGI",
    "ConfigError",
    "HealthCheck",
    "HSTS",
    "Host",
    "Proxy",
    "Redirect",
    "Resource",
    "Scripts",
    "Site",
    "Static",
]
__version__ = "0.1.0"
