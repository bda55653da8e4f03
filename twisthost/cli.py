"""The ``twisthost`` command: ``check`` a config and print its routing table.

Like ``nginx -t``: load, validate and build everything (WSGI apps are
imported, files checked) without opening a socket, then show what would be
served where, so a deploy script can refuse a broken config before reload.
Every mistake found is listed, each at its ``site.py:LINE``, not only the first.
"""

from __future__ import annotations

import argparse
import sys

from .config import TLS, Site
from . import statuscli
from .admin import exposure_warning
from .errors import ConfigError

# The docstring above is reStructuredText for the docs; --help prints plain words.
DESCRIPTION = ("twisthost: check a config (validate it, import its apps, print its routing table) "
               "or print a running host's status.")
from .service import prepare
from .tls import describe as describe_tls


def routing_table(site: Site) -> list[str]:
    lines = ["listen:"]
    for item in site.listen:
        lines.append(f"  {item.summary() if isinstance(item, TLS) else item}")
    lines.append("hosts:")
    for host in site.all_hosts():
        if host is site.default:
            title = "(default)" + (f" {host.name}" if host.name else "")
        else:
            title = host.name + (f"  aliases: {', '.join(host.aliases)}" if host.aliases else "")
        lines.append(f"  {title}")
        width = max(len(prefix) for prefix in host.routes)
        for prefix, service in host.routes.items():
            lines.append(f"    {prefix.ljust(width)}  -> {service.summary()}")
    if site.trusted_proxies:
        lines.append("trusted_proxies: " + ", ".join(map(str, site.trusted_proxies)))
    if site.admin:
        lines.append(f"admin: {site.admin}" + (" (token required)" if site.admin_token else ""))
    return lines


def check(args) -> int:
    try:
        prepared = prepare(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"config {prepared.path}: OK")
    print("\n".join(routing_table(prepared.site)))
    warning = exposure_warning(prepared.site)
    if warning:
        print(warning, file=sys.stderr)
    if prepared.context.shared.get("tls"):
        print("tls certificates:")
        print("\n".join(describe_tls(prepared.context.shared["tls"])))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="twisthost", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="validate a config and print its routing table")
    check_parser.add_argument("config", nargs="?", default="site.py", help="path of site.py")
    check_parser.set_defaults(run=check)
    statuscli.add_parser(commands)
    args = parser.parse_args(argv)
    return args.run(args)
