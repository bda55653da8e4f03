"""TLS config mistakes are ConfigErrors at the site.py line; ``twisthost check`` shows certificates.

In-process: ``twisthost.service.prepare`` is what ``check``, startup and
reload run, so a broken certificate can never reach a listener.
"""

from __future__ import annotations

import pytest
from tls_support import CA

from conftest import write_site
from twisthost import cli
from twisthost.errors import ConfigError
from twisthost.service import prepare

SERVICE = 'Redirect("https://example.test/")'


@pytest.fixture
def ca(tmp_path):
    ca = CA(tmp_path)
    ca.issue("a", ["a.test"])
    ca.issue("b", ["*.b.test"])
    ca.issue("default", ["default.test"])
    return ca


def site_error(folder, body: str, marker: str) -> tuple[str, str]:
    """Prepare a site.py whose body is ``body``; return (error text, expected 'site.py:N')."""
    path = write_site(folder, "from twisthost import HSTS, TLS, Host, Redirect, Site\n" + body)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if marker in text)
    with pytest.raises(ConfigError) as error:
        prepare(str(path))
    return str(error.value), f"{path}:{line}:"


def one_host(tls: str = 'TLS("tcp:8443", cert="default.pem", key="default.key")', host: str = "") -> str:
    return f"""site = Site(
    listen=[{tls}],
    hosts=[Host("a.test", {SERVICE}{host})],
)
"""


@pytest.mark.parametrize("tls, host, marker, message", [
    # mismatched key pair, on the Host and on the listener
    (None, ', cert="a.pem", key="b.key"', "Host(", "private key in"),
    ('TLS("tcp:8443", cert="a.pem", key="default.key")', "", "TLS(", "does not match the certificate"),
    # not PEM, no key, no certificate, missing file
    ('TLS("tcp:8443", cert="site.py", key="default.key")', "", "TLS(", "no certificate in"),
    ('TLS("tcp:8443", cert="a.pem")', "", "TLS(", "no private key in"),
    ('TLS("tcp:8443", cert="a.pem", key="nope.key")', "", "TLS(", "does not exist"),
    ('TLS("tcp:8443", key="a.key")', "", "TLS(", "without cert"),
    # which certificate for clients without SNI?
    ('TLS("tcp:8443", certs_dir="certs")', "", "TLS(", "several certificates"),
    ('TLS("tcp:8443", cert="default.pem", key="default.key", default="zzz.test")', "", "TLS(", "names no host"),
    ('TLS("tcp:8443")', "", "TLS(", "has no certificate"),
    # options
    ('TLS("tcp:8443", cert="a.pem", key="a.key", min_version="1.1")', "", "TLS(", "'1.2' or '1.3'"),
    ('TLS("tcp:8443", cert="a.pem", key="a.key", verify_client="optional")', "", "TLS(", "needs client_ca"),
    ('TLS("tcp:8443", cert="a.pem", key="a.key", client_ca="a.pem", verify_client="yes")', "", "TLS(", "'optional' or 'required'"),
    ('TLS("ssl:8443", cert="a.pem", key="a.key")', "", "TLS(", "plain socket endpoint"),
    ('TLS("tcp:8443", cert="a.pem", key="a.key", http2="yes")', "", "TLS(", "True or False"),
    (None, ", https_redirect=70000", "Host(", "https_redirect"),
    (None, ", hsts='always'", "Host(", "hsts"),
    (None, ", hsts=HSTS(preload=True)", "Host(", "include_subdomains=True"),
    ('"tcp:8080"', ', cert="a.pem", key="a.key"', "Host(", "no TLS(...) listener"),
])
def test_tls_mistakes_point_at_their_line(ca, tls, host, marker, message):
    (ca.folder / "certs").mkdir()
    for stem in ("a", "b"):
        (ca.folder / "certs" / f"{stem}.pem").write_bytes(
            (ca.folder / f"{stem}.pem").read_bytes() + (ca.folder / f"{stem}.key").read_bytes())
    text, where = site_error(ca.folder, one_host(tls or 'TLS("tcp:8443", cert="default.pem", key="default.key")', host), marker)
    assert text.startswith(where), text
    assert message in text


def test_expired_and_not_yet_valid_certificates_are_errors(ca):
    ca.issue("old", ["a.test"], days=-1, start_days=-30)
    text, where = site_error(ca.folder, one_host(host=', cert="old.pem", key="old.key"'), "Host(")
    assert text.startswith(where) and "expired on" in text
    ca.issue("future", ["a.test"], start_days=2)
    text, where = site_error(ca.folder, one_host(host=', cert="future.pem", key="future.key"'), "Host(")
    assert text.startswith(where) and "not valid before" in text


def test_encrypted_key_is_an_error_with_a_hint(ca):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((ca.folder / "a.key").read_bytes(), None)
    (ca.folder / "locked.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    text, where = site_error(ca.folder, one_host(host=', cert="a.pem", key="locked.key"'), "Host(")
    assert text.startswith(where) and "passphrase" in text


def check_output(ca, capsys, body: str) -> tuple[int, str]:
    path = write_site(ca.folder, "from twisthost import TLS, Host, Redirect, Site\n" + body)
    status = cli.main(["check", str(path)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_check_lists_names_certificates_and_expiry(ca, capsys):
    ca.issue("soon", ["soon.test"], days=5)
    (ca.folder / "certs").mkdir()
    both = ca.issue("dir", ["dir.test", "*.dir.test"], key_in_cert=True)[0]
    both.rename(ca.folder / "certs" / "dir.pem")
    status, out = check_output(ca, capsys, f"""
site = Site(
    listen=["tcp:8080", TLS("tcp:8443", certs_dir="certs", default="a.test")],
    hosts=[
        Host("a.test", {SERVICE}, cert="a.pem", key="a.key", aliases=["www.a.test"]),
        Host("*.b.test", {SERVICE}, cert="b.pem", key="b.key"),
        Host("soon.test", {SERVICE}, cert="soon.pem", key="soon.key"),
    ],
)
""")
    assert status == 0, out
    section = out.partition("tls certificates:\n")[2]
    lines = section.splitlines()
    assert lines[0].startswith("  tcp:8443  (TLS 1.2+, h2)")
    rows = {line.split("->")[0].strip(): line.split("->")[1] for line in lines[1:] if "->" in line}
    assert rows["(no SNI / unknown)"].startswith(f" {ca.folder}/a.pem + a.key  (expires ")
    assert "a.pem" in rows["www.a.test"] and "b.pem" in rows["*.b.test"]
    assert f"{ca.folder}/certs/dir.pem" in rows["dir.test"] and "dir.pem" in rows["*.dir.test"]
    expiring = [line for line in lines if "warning" in line and "expires" in line]
    assert len(expiring) == 1 and "soon.pem expires on" in expiring[0] and "(4 days)" in expiring[0]
    assert any("does not cover 'www.a.test'" in line for line in lines)  # a.pem lists a.test only


def test_check_warns_when_a_certificate_does_not_cover_its_host(ca, capsys):
    status, out = check_output(ca, capsys, one_host(host=', cert="b.pem", key="b.key"'))
    assert status == 0
    assert "warning: certificate" in out and "does not cover 'a.test'" in out


def test_check_fails_with_the_location_of_a_bad_pair(ca, capsys):
    status, out = check_output(ca, capsys, one_host(host=', cert="a.pem", key="b.key"'))
    assert status == 1 and "site.py:4: error:" in out and "does not match" in out


def test_one_certificate_needs_no_default_and_a_combined_pem_needs_no_key(ca):
    combined = ca.issue("combined", ["a.test"], key_in_cert=True)[0]
    path = write_site(ca.folder, f"""
from twisthost import TLS, Host, Redirect, Site
site = Site(listen=[TLS("tcp:8443")], hosts=[Host("a.test", {SERVICE}, cert="{combined.name}")])
""")
    listener = prepare(str(path)).context.shared["tls"]["tcp:8443"]
    assert listener.default.cert_path == str(combined)
    assert listener.names == {"a.test": listener.default}
