"""Keep the cyclic garbage collector off what lives as long as the process.

A full collection walks every tracked object.  After start-up that is
Twisted, twisthost, the apps and the built tree: ~67,000 objects with Flask
and Django imported, 35–40 ms per full collection on the benchmark box.
Python runs one every few thousand requests, and those pauses were the p99
of a static route next to a busy WSGI app (25–55 ms).  ``gc.freeze()`` moves
the objects alive at that moment to a generation the collector never walks;
they are still freed by reference counting when they go, only cycles among
them are not.  So the tree of a replaced config is unfrozen and collected
once its requests are done (:func:`refreeze`), and nothing accumulates.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Collect what is garbage now, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()


def refreeze() -> None:
    """After a reload: let the old config's cycles be collected, then freeze the new state."""
    gc.unfreeze()
    freeze()
