"""``twisthost.tls``: the warning when ``--listen`` leaves https redirects without their listener."""

from __future__ import annotations

import pytest
from conftest import ROOT

from twisthost.loader import load
from twisthost.tls import redirects_without_tls

CERT = ROOT / "examples" / "tls" / "localhost.pem"
KEY = ROOT / "examples" / "tls" / "localhost.key"


def site(tmp_path, listen: str, *hosts: str):
    (tmp_path / "site.py").write_text(
        "from twisthost import TLS, Host, Redirect, Site\n"
        f"site = Site(listen=[{listen}], hosts=[{', '.join(hosts)}])\n")
    return load(str(tmp_path / "site.py"))


TLS_8443 = f"'tcp:8080', TLS('tcp:8443', cert={str(CERT)!r}, key={str(KEY)!r})"


def test_names_every_stranded_host_and_its_port(tmp_path):
    warning = redirects_without_tls(site(
        tmp_path, TLS_8443,
        "Host('a.localhost', Redirect('/'), https_redirect=True)",
        "Host('b.localhost', Redirect('/'), https_redirect=8443)",
        "Host('plain.localhost', Redirect('/'))",
        "Host('c.localhost', Redirect('/'), https_redirect=443)"))  # a TLS proxy in front: not ours
    assert warning.startswith("--listen replaces every listener of the config, its TLS ones too")
    assert "a.localhost, b.localhost to port 8443" in warning
    assert "plain.localhost" not in warning and "c.localhost" not in warning


@pytest.mark.parametrize("listen, hosts", [
    (TLS_8443, ["Host('plain.localhost', Redirect('/'))"]),                              # no redirects
    (TLS_8443, ["Host('a.localhost', Redirect('/'), hsts=True)"]),                       # HSTS only
    ("'tcp:8080'", ["Host('a.localhost', Redirect('/'), https_redirect=True)"]),        # no TLS dropped
])
def test_nothing_to_say(tmp_path, listen, hosts):
    assert redirects_without_tls(site(tmp_path, listen, *hosts)) is None
