"""``Static(root)``: map a request path to a file under ``root``, safely.

``twisted.web.static.File`` walks the URL one segment at a time, lists
folders, serves dotfiles and follows any symlink.  Here the mount is a leaf:
it takes the whole (already percent-decoded) ``request.postpath`` at once,
refuses every traversal form, and walks the names with ``lstat``; a symlink
on the way sends the path through ``realpath`` and a check that it is still
inside ``root``, all before anything is opened.  Then it
decides between file, index, listing, fallback and 404, and hands the file
and the stat it made to :func:`twisthost.staticfile.render_file` for the
HTTP side.
"""

from __future__ import annotations

import os
import re
import stat

from twisted.web import static
from twisted.web.resource import Resource

from .lane import file_lane
from .pages import write_error
from .staticfile import FileOptions, render_file, whole_file

_METHODS = (b"GET", b"HEAD")
_UNSAFE = re.compile(r"[/\\\0]")  # in a decoded name: a separator, or NUL
#: A '%' not starting a ``%XX`` escape in a raw target (RFC 3986 2.1).  Twisted's decoding
#: keeps it as a literal '%', so ``/100%.txt`` would reach a file named so; nginx says 400.
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


class BadPath(Exception):
    """A path segment no honest client sends: '..', NUL, an encoded slash..."""


class StaticResource(Resource):
    """The resource mounted for one ``Static`` config."""

    isLeaf = True

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.root = os.path.realpath(config.root)
        self.options = FileOptions.from_config(config)

    def render(self, request):
        if request.method not in _METHODS:
            request.setHeader(b"allow", b"GET, HEAD")
            return write_error(request, 405, "Method not allowed.")
        if self.config.internal:
            return self.not_found(request)
        if bad_escape(request.path):
            return write_error(request, 400, "Bad request path.")
        return self.serve(request, request.postpath)

    def serve(self, request, segments: list[bytes]):
        """Answer ``request`` with the file, folder or fallback ``segments`` name.

        Unlike :meth:`render` this skips the ``internal`` check: it is the hook
        an ``X-Accel-Redirect`` hand-off calls with the redirect's segments.
        """
        try:
            names = self.names(segments)
        except BadPath:
            return write_error(request, 400, "Bad request path.")
        if names is None:
            return self.not_found(request)
        found = self.resolve(names)
        if found is None:
            return self.not_found(request)  # hidden or outside: never papered over by fallback
        path, st = found
        wants_folder = bool(segments) and segments[-1] == b""
        if st is not None and stat.S_ISDIR(st.st_mode):
            if not wants_folder:
                return self.add_slash(request)
            return self.folder(request, path, names)
        if st is not None and stat.S_ISREG(st.st_mode) and not (wants_folder and names):
            return render_file(request, path, "/".join(names), st, self.options)
        return self.missing(request, names)

    def lane(self, channel, head, table, route: str, prefix, segments: list[bytes]):
        """The static lane's request for ``head`` (:mod:`twisthost.lane`), or None."""
        if bad_escape(head.target):
            return None  # the usual path answers 400
        return file_lane(channel, head, table, route, self, segments)

    def whole_file(self, segments: list[bytes], codings: bool, can_sendfile):
        """For :mod:`twisthost.lane`: what :func:`~twisthost.staticfile.whole_file` says of
        the file ``segments`` name, when :meth:`render` would answer with it (and only then).

        None for everything else: folders, index files, fallbacks, hidden,
        missing or refused paths, and an ``internal`` mount.
        """
        if self.config.internal or not segments or not segments[-1]:
            return None
        try:
            names = self.names(segments)
        except BadPath:
            return None
        if not names:
            return None
        found = self.resolve(names)
        if found is None or found[1] is None or not stat.S_ISREG(found[1].st_mode):
            return None
        return whole_file(self.options, found[0], "/".join(names), found[1], codings, can_sendfile)

    def names(self, segments: list[bytes]) -> list[str] | None:
        """Decoded path names below root; None for a hidden name, BadPath for an attack."""
        names = []
        for segment in segments:
            if not segment:
                continue  # '//' and the trailing '/' add nothing, as in nginx
            try:
                name = segment.decode("utf-8")
            except UnicodeDecodeError:
                raise BadPath() from None
            if name in (".", "..") or _UNSAFE.search(name):
                raise BadPath()
            if self.hidden(name):
                return None
            names.append(name)
        return names

    def hidden(self, name: str) -> bool:
        return name.startswith(".") and not self.config.dotfiles and name != ".well-known"

    def resolve(self, names: list[str]) -> tuple[str, os.stat_result | None] | None:
        """``(real path, stat or None if missing)``, or None when refused.

        The common case, no symlink on the way, costs one ``lstat`` per name;
        a symlink sends the whole path through ``realpath`` and the checks
        that it stays inside root and reaches no hidden name.
        """
        path, st = self.root, _stat(self.root) if not names else None
        for name in names:
            path = os.path.join(path, name)
            try:
                st = os.lstat(path)
            except (OSError, ValueError):
                return path, None
            if stat.S_ISLNK(st.st_mode):
                return self._resolve_link(os.path.join(self.root, *names))
        return path, st

    def _resolve_link(self, path: str) -> tuple[str, os.stat_result | None] | None:
        real = os.path.realpath(path)
        if real == self.root:
            return real, _stat(real)
        if os.path.commonpath([real, self.root]) != self.root:
            if not self.config.follow_symlinks:
                return None
        elif any(self.hidden(name) for name in os.path.relpath(real, self.root).split(os.sep)):
            return None
        return real, _stat(real)

    def folder(self, request, path: str, names: list[str]):
        for index in self.config.index:
            found = self.resolve(names + [index])
            if found and found[1] is not None and stat.S_ISREG(found[1].st_mode):
                return render_file(request, found[0], "/".join(names + [index]), found[1], self.options)
        if self.config.listing:
            request.setHeader(b"x-content-type-options", b"nosniff")
            visible = [
                n for n in sorted(os.listdir(path))
                if not self.hidden(n) and self.resolve(names + [n]) is not None
            ]
            return static.DirectoryLister(
                path, visible, self.options.types, {}, "application/octet-stream"
            ).render(request)
        return self.not_found(request)

    def missing(self, request, names: list[str]):
        fallback = self.config.fallback
        looks_like_file = bool(names) and "." in names[-1]
        if fallback and (self.config.fallback_assets or not looks_like_file):
            relpath = os.path.relpath(fallback, self.root).replace(os.sep, "/")
            return render_file(request, fallback, relpath, _stat(fallback), self.options)
        return self.not_found(request)

    def not_found(self, request):
        """404 with the configured page (or the standard plain one)."""
        page = self.config.not_found
        body = _read(page) if page else None
        if body is None:
            return write_error(request, 404, "Not found.")
        request.setResponseCode(404)
        request.setHeader(b"content-type", self.options.content_type(page).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body

    def add_slash(self, request):
        """301 to the folder's URL with a '/' (one leading slash: never '//host')."""
        trimmed = request.path.strip(b"/")
        location = b"/" + trimmed + b"/" if trimmed else b"/"
        query = request.uri.partition(b"?")[2]
        if query:
            location += b"?" + query
        request.setHeader(b"location", location)
        return write_error(request, 301, "Moved to the folder URL with a trailing slash.")


def bad_escape(target: bytes) -> bool:
    """Does the path of a raw request target hold a '%' that starts no ``%XX`` escape?"""
    path = target.partition(b"?")[0]
    return b"%" in path and _BAD_ESCAPE.search(path) is not None


def _stat(path: str):
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def build_static(config, context) -> StaticResource:
    return StaticResource(config)
