"""Balancing policies: which available upstream gets the next request.

``Balancer.choose`` first filters (already tried this request, down, full)
and falls back to the backup upstreams only when no primary is left, like
nginx's ``backup`` servers.  Each policy then picks among the candidates:

- ``round_robin``: nginx's smooth weighted round robin (weights interleave,
  no bursts to the heaviest upstream);
- ``least_conn``: fewest requests in flight per unit of weight, round robin
  among ties;
- ``random_two``: two weighted random picks, the less busy one wins
  ("power of two choices");
- ``ip_hash`` / ``uri_hash``: weighted rendezvous hashing of the client
  address / request URI, so a key sticks to one upstream and only the keys
  of an upstream that goes down move elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import random


def smooth_round_robin(candidates):
    total, best = 0, None
    for upstream in candidates:
        upstream.current_weight += upstream.weight
        total += upstream.weight
        if best is None or upstream.current_weight > best.current_weight:
            best = upstream
    best.current_weight -= total
    return best


def _load(upstream) -> float:
    return upstream.active / upstream.weight


def least_conn(candidates):
    lowest = min(map(_load, candidates))
    return smooth_round_robin([u for u in candidates if _load(u) == lowest])


def random_two(candidates, rng=random):
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.choices(candidates, weights=[u.weight for u in candidates], k=2)
    return first if _load(first) <= _load(second) else second


def rendezvous(candidates, key: bytes):
    """Highest random weight: the score of (key, upstream) is stable, so is the winner."""

    def score(upstream):
        digest = hashlib.blake2b(key + upstream.url.encode(), digest_size=8).digest()
        unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
        return -upstream.weight / math.log(unit)

    return max(candidates, key=score)


POLICIES = {
    "round_robin": lambda candidates, client_addr, uri: smooth_round_robin(candidates),
    "least_conn": lambda candidates, client_addr, uri: least_conn(candidates),
    "random_two": lambda candidates, client_addr, uri: random_two(candidates),
    "ip_hash": lambda candidates, client_addr, uri: rendezvous(candidates, client_addr.encode()),
    "uri_hash": lambda candidates, client_addr, uri: rendezvous(candidates, uri),
}


class Balancer:
    """Picks the upstream for one try of one request."""

    def __init__(self, policy: str, primaries, backups):
        self.pick = POLICIES[policy]
        self.groups = [list(primaries), list(backups)]
        self.only = primaries[0] if len(primaries) == 1 and not backups else None

    def choose(self, now: float, exclude, client_addr: str, uri: bytes):
        if self.only is not None:  # one upstream: no list to build per request
            return self.only if not exclude and self.only.available(now) else None
        for group in self.groups:
            candidates = [u for u in group if u not in exclude and u.available(now)]
            if candidates:
                return self.pick(candidates, client_addr, uri)
        return None
