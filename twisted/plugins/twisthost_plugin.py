"""Registers ``twistd twisthost``; all the work lives in ``twisthost.tap``."""

from twisted.application.service import ServiceMaker

twisthost = ServiceMaker(
    "twisthost",
    "twisthost.tap",
    "Host WSGI apps, virtual hosts, proxies, static files and .rpy scripts from a site.py.",
    "twisthost",
)
