"""Every way a config can be wrong ends as one ConfigError naming file and line."""

import subprocess
import sys

import pytest

from conftest import TWISTD, config_error, write_site
from twisthost.errors import ConfigError
from twisthost.loader import load


error_for = config_error


def test_syntax_error_points_at_line(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        site = Site(
            listen=["tcp:8080"]
        hosts=[])
    """)
    assert text.startswith(f"{tmp_path}/site.py:3: error: syntax error: invalid syntax. Perhaps you forgot a comma?")
    # The hint says what to change, not the source line again (issue 22).
    assert 'hint: put a comma after ["tcp:8080"] (line 3) and before hosts (line 4)' in text


def test_exception_while_running_points_at_line(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        import os
        port = int(os.environ["TWISTHOST_NO_SUCH_VARIABLE"])
        site = Site()
    """)
    assert text.startswith(f"{tmp_path}/site.py:3: error: KeyError")


def test_missing_site(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        sitee = Site()
    """)
    assert "site.py:" in text and "does not define 'site'" in text
    assert "hint: end the file with: site = Site(" in text


def test_site_of_wrong_type(tmp_path):
    text = error_for(tmp_path, """
        x = 1
        site = {"listen": ["tcp:8080"]}
    """)
    assert "site.py:2: error: 'site' must be a Site(...), got dict" in text


def test_hosts_given_as_a_string(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        site = Site(hosts="a.com")
    """)
    assert "site.py:2: error: Site(hosts=...) expects a list of Host(...), got str 'a.com'" in text


def test_service_of_wrong_type(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host
        site = Site(hosts=[
            Host("a.example", "not a service"),
        ])
    """)
    assert "site.py:3: error: Host 'a.example' service must be a service" in text


def test_unknown_keyword_suggests_the_right_one(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[
            Host("a.example", Redirect("/"),
                 alias=["b.example"]),
        ])
    """)
    assert "site.py:3: error: Host() got an unknown option 'alias'" in text
    assert "did you mean aliases=?" in text


def test_too_many_positional_arguments(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Redirect
        site = Site(default=Redirect("/", 302))
    """)
    assert "site.py:2: error: Redirect() takes at most 1 positional argument(s) (url), got 2" in text


def test_duplicate_host_name_via_alias(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[
            Host("a.example", Redirect("/")),
            Host("b.example", Redirect("/"), aliases=["A.Example."]),
        ])
    """)
    assert "site.py:4: error: duplicate host name 'a.example' (already used at line 3)" in text


def test_invalid_endpoint(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        site = Site(listen=["tcp:eighty"])
    """)
    assert "site.py:2: error: invalid listen endpoint 'tcp:eighty'" in text
    assert "hint: examples: 'tcp:8080'" in text


def test_unknown_endpoint_type(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        site = Site(listen=["http:8080"])
    """)
    assert "site.py:2: error: invalid listen endpoint 'http:8080'" in text


def test_missing_folder(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("a.example", Scripts("no-such-folder"))])
    """)
    assert f"site.py:2: error: Scripts(folder=...): folder '{tmp_path}/no-such-folder' does not exist" in text
    assert "relative paths are taken from the folder of the config file" in text


@pytest.mark.parametrize("prefix", ["api", "/api//v1", "/a/../b", "/a?b", "/a b", "/a\\\\b"])
def test_invalid_route_prefix(tmp_path, prefix):
    text = error_for(tmp_path, f"""
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[
            Host("a.example", routes={{{prefix!r}: Redirect("/")}}),
        ])
    """)
    assert "site.py:3: error: invalid route prefix" in text


def test_overlapping_route_prefixes(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[
            Host("a.example", routes={"/api": Redirect("/"), "/api/": Redirect("/x")}),
        ])
    """)
    assert "site.py:3: error: Host 'a.example': route prefixes '/api' and '/api/' are the same path" in text


def test_service_and_root_route_conflict(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.example", Redirect("/"), routes={"/": Redirect("/x")})])
    """)
    assert "has both a service and a '/' route" in text


@pytest.mark.parametrize("name", ["a.example:8080", "*.*.example", "bad_/name", "a..b", ""])
def test_invalid_host_names(tmp_path, name):
    text = error_for(tmp_path, f"""
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host({name!r}, Redirect("/"))])
    """)
    assert "site.py:2: error: invalid host name" in text


def test_port_in_host_name_hint(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.example:8080", Redirect("/"))])
    """)
    assert "hint: drop the port" in text


def test_bad_redirect_url_and_status(tmp_path):
    assert "must be absolute" in error_for(tmp_path, """
        from twisthost import Site, Redirect
        site = Site(default=Redirect("example.com"))
    """)
    assert "must be 301, 302, 303, 307 or 308" in error_for(tmp_path, """
        from twisthost import Site, Redirect
        site = Site(default=Redirect("/", status=200))
    """)


def test_bad_trusted_proxy(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site
        site = Site(trusted_proxies=["10.0.0.0/8", "localhost"])
    """)
    assert "site.py:2: error: trusted_proxies: 'localhost' is not an IP address or network" in text


def test_resource_import_error_found_at_build(tmp_path):
    text = error_for(tmp_path, """
        from twisthost import Site, Resource
        site = Site(
            default=Resource("no_such_module_here:root"),
        )
    """, build=True)
    assert "site.py:3: error: cannot import 'no_such_module_here'" in text


def test_resource_that_is_not_a_resource(tmp_path):
    (tmp_path / "things.py").write_text("value = 42\ndef broken():\n    raise RuntimeError('boom')\n")
    text = error_for(tmp_path, """
        from twisthost import Site, Resource
        site = Site(default=Resource("things:value"))
    """, build=True)
    assert "site.py:2: error: Resource('things:value') gave int, not a twisted.web resource" in text
    text = error_for(tmp_path, """
        from twisthost import Site, Resource
        site = Site(default=Resource("things:broken()"))
    """, build=True)
    assert "site.py:2: error: 'things:broken()' raised RuntimeError: boom" in text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path / "nope.py"))
    assert "cannot read config file" in str(caught.value)


def test_check_command_exit_codes(tmp_path):
    bad = write_site(tmp_path, """
        from twisthost import Site
        site = Site(listen=["tcp:nope"])
    """)
    result = subprocess.run([sys.executable, "-m", "twisthost", "check", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}:2: error: invalid listen endpoint")
    assert "Traceback" not in result.stderr


def test_check_command_lists_every_error(tmp_path):
    bad = write_site(tmp_path, """
        from twisthost import Site, Host, Redirect, Resource
        site = Site(
            listen=["tcp:nope"],
            hosts=[Host("a.example", Redirect("/"), aliasez=[]),
                   Host("b.example", Resource("no_such_module:root"))],
        )
    """)
    result = subprocess.run([sys.executable, "-m", "twisthost", "check", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors[0].startswith(f"{bad}:3: error: invalid listen endpoint 'tcp:nope'")
    assert errors[1].startswith(f"{bad}:4: error: Host() got an unknown option 'aliasez'")
    # The Site(...) itself is broken (its listen=), so nothing is built: no import error yet.
    assert len(errors) == 2 and result.stderr.endswith("2 errors\n")


def test_help_is_plain_text():
    result = subprocess.run([sys.executable, "-m", "twisthost", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "check" in result.stdout
    assert "`" not in result.stdout  # reStructuredText markup belongs in the docs, not the terminal


def test_twistd_prints_config_error_and_exits_nonzero(tmp_path):
    bad = write_site(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.example", Redirect("/"), aliasez=[])])
    """)
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(bad)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert f"{bad}:2: error: Host() got an unknown option 'aliasez'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_twistd_rejects_bad_listen_option(tmp_path):
    good = write_site(tmp_path, """
        from twisthost import Site, Redirect
        site = Site(default=Redirect("/"))
    """)
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(good),
                             "--listen", "tcp:notaport"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--listen expects" in result.stderr or "invalid listen endpoint 'tcp:notaport'" in result.stderr
