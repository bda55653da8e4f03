"""``Scripts(folder)``: Twisted Web ``.rpy`` resource scripts, run once and reloaded on change.

Twisted's own ``ResourceScript`` executes the script on every request in the
reactor thread (unless it calls ``cache()``, after which it never reloads),
``ResourceScriptDirectory`` serves any file under it and is broken on
Python 3.  Here a script runs when first requested and again only when its
file's mtime, size or inode changes; its ``resource`` is reused in between.
Scripts get the globals Twisted gives them (``__file__``, ``registry``,
``cache``, ``recache``) so existing ``.rpy`` files run unmodified, and a
script that fails to load answers a plain 500 with the traceback in the log.
Only regular files inside the configured folder are reached: path segments
are checked one by one and the resolved path must stay under the folder's
real path, so ``..``, encoded slashes and symlinks pointing out are refused.
"""

from __future__ import annotations

import os
import traceback
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.static import File, Registry

from .pages import ErrorPage, error_body, write_error

log = Logger()

_NOT_FOUND = ErrorPage(404, "Not found.")


class ScriptError(Resource):
    """What a script that failed to load answers: 500, traceback only with ``debug``."""

    isLeaf = True

    def __init__(self, detail: str):
        super().__init__()
        self.detail = detail

    def render(self, request):
        return write_error(request, 500, self.detail)


def _ignore_cache_request() -> None:
    """``cache()``/``recache()`` in old scripts: every script is cached here already."""


class ScriptCache:
    """Loaded script resources by path, keyed on the file's (mtime, size, inode).

    A failure is cached too, so a broken script is not re-run on every request;
    saving the file (which changes the key) retries it.
    """

    def __init__(self, registry: Registry, debug: bool, reload: bool):
        self.registry = registry
        self.debug = debug
        self.reload = reload
        self._entries: dict[str, tuple[tuple, IResource]] = {}

    def get(self, path: str) -> IResource:
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        entry = self._entries.get(path)
        if entry is not None and (entry[0] == key or not self.reload):
            return entry[1]
        resource = self._load(path)
        self._entries[path] = (key, resource)
        return resource

    def forget(self, path: str) -> None:
        self._entries.pop(path, None)

    def _load(self, path: str) -> IResource:
        namespace = {
            "__file__": path,
            "__name__": "rpy:" + os.path.basename(path),
            "registry": self.registry,
            "cache": _ignore_cache_request,
            "recache": _ignore_cache_request,
        }
        try:
            with open(path, "rb") as handle:
                code = compile(handle.read(), path, "exec")
            exec(code, namespace)  # noqa: S102 - running the operator's scripts is the point
        except (Exception, SystemExit):
            log.failure("rpy script {path} failed to load", path=path)
            return self._error(traceback.format_exc())
        resource = namespace.get("resource")
        if not IResource.providedBy(resource):
            problem = (
                f"{path} did not assign a twisted.web resource to 'resource' "
                f"(got {type(resource).__name__})"
            )
            log.error("rpy script {problem}", problem=problem)
            return self._error(problem)
        log.info("rpy script {path} loaded", path=path)
        return resource

    def _error(self, detail: str) -> ScriptError:
        return ScriptError(detail if self.debug else "The script failed to load; see the server log.")


def safe_segment(segment: bytes) -> str | None:
    """A decoded path segment usable as one file name, or None.

    Segments are already percent-decoded, so ``%2F`` shows up as a slash here;
    dotfiles (and ``.``/``..``) are never served.
    """
    if not segment or segment.startswith(b".") or any(c in segment for c in (b"/", b"\\", b"\0")):
        return None
    return os.fsdecode(segment)


def inside(root: str, path: str) -> bool:
    """Whether ``path``, with symlinks resolved, is ``root`` or below it."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


class ScriptFolder(Resource):
    """One folder of scripts; child lookups map URL segments to files.

    ``name.rpy`` wins over a folder ``name/``, which wins over a static file
    ``name`` (with ``static=True``).
    """

    def __init__(self, folder: str, root: str, cache: ScriptCache, index: tuple, static: bool):
        super().__init__()
        self.folder, self.root, self.cache = folder, root, cache
        self.index, self.static = index, static

    def getChild(self, path: bytes, request):
        if path == b"":
            return self._index()
        name = safe_segment(path)
        if name is None:
            return _NOT_FOUND
        full = os.path.join(self.folder, name)
        script = full if name.endswith(".rpy") else full + ".rpy"
        found = self._file(script)
        if found is not None:
            return found
        if os.path.isdir(full) and inside(self.root, full):
            return ScriptFolder(full, self.root, self.cache, self.index, self.static)
        return self._file(full) or _NOT_FOUND

    def _index(self):
        for name in self.index:
            found = self._file(os.path.join(self.folder, name))
            if found is not None:
                return found
        return _NOT_FOUND

    def _file(self, path: str):
        """The resource for a regular file under the root, or None."""
        if not os.path.isfile(path) or not inside(self.root, path):
            self.cache.forget(path)
            return None
        if path.endswith(".rpy"):
            return self.cache.get(path)
        if self.static:
            return File(os.path.realpath(path))
        return None

    def render(self, request):
        """A folder asked for without its slash: redirect so relative links work."""
        last = request.prepath[-1] if request.prepath else b""
        location = quote(last).encode() + b"/"
        query = request.uri.partition(b"?")[2]
        if query:
            location += b"?" + query
        request.setResponseCode(301)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"" if request.method == b"HEAD" else error_body(301, location.decode("latin-1"))


def build_scripts(config, context) -> Resource:
    root = os.path.realpath(config.folder)
    cache = ScriptCache(Registry(), config.debug, config.reload)
    return ScriptFolder(root, root, cache, config.index, config.static)
