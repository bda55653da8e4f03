"""``Static(...)`` config mistakes: each a ConfigError naming site.py and the line."""

from __future__ import annotations

import pytest

from conftest import config_error, write_site
from twisthost.errors import ConfigError
from twisthost.loader import load


@pytest.fixture
def root(tmp_path):
    (tmp_path / "www" / "sub").mkdir(parents=True)
    (tmp_path / "www" / "index.html").write_text("home")
    (tmp_path / "secret.txt").write_text("no")
    return tmp_path


@pytest.mark.parametrize("options, message", [
    ("index='index.html'", "expects a list of file names"),
    ("index=['a/b.html']", "must be a plain file name"),
    ("listing='yes'", "Static(listing=...) expects True or False"),
    ("fallback='missing.html'", "Static(fallback='missing.html'): file"),
    ("fallback='../secret.txt'", "is outside root"),
    ("not_found='sub'", "Static(not_found='sub'): file"),
    ("max_age='1h'", "Static(max_age=...) expects an integer"),
    ("max_age=-1", "must be in 0..inf"),
    ("cache=['*.css']", "Static(cache=...) expects a dict"),
    ("cache={'*.css': 'max-age=1\\r\\nX-Evil: 1'}", "must be a non-empty one-line string"),
    ("types={'log': 'text/plain'}", "'log' is not an extension"),
    ("precompressed=['deflate']", "unknown encoding 'deflate'"),
    ("gzip_min_size=-5", "must be in 0..inf"),
    ("sendfile_min_size='big'", "expects an integer"),
    ("follow_symlink=True", "did you mean follow_symlinks=?"),
])
def test_bad_options_point_at_the_line(root, options, message):
    text = config_error(root, f"""
        from twisthost import Site, Static
        site = Site(
            default=Static("www", {options}),
        )
    """)
    assert f"{root / 'site.py'}:3" in text and message in text


def test_missing_root(root):
    path = write_site(root, """
        from twisthost import Site, Static
        site = Site(default=Static("nowhere"))
    """)
    with pytest.raises(ConfigError, match=r"site\.py:2: .*Static\(root=\.\.\.\): folder .* does not exist"):
        load(str(path))


def test_good_options_are_normalised(root):
    path = write_site(root, """
        from twisthost import Site, Static
        site = Site(default=Static("www", index=["index.html", "index.htm"], fallback="index.html",
                                   cache={"*.css": "max-age=60"}, types={".log": "text/plain"},
                                   sendfile_min_size=None, max_age=0))
    """)
    static = load(str(path)).default.routes["/"]
    assert static.fallback == str(root / "www" / "index.html")
    assert static.cache == (("*.css", "max-age=60"),) and static.index == ("index.html", "index.htm")
