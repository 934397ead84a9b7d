"""Prometheus metrics: `GET /metrics` on the server's port.

    registry.py    what is counted (the families and their labels) and the hot path that counts
    shared.py      one process's values in a memory map; every worker's read back by a scrape
    keystore.py    timing the service's calls into a keystore
    process.py     process_* for the server's processes together
    exposition.py  the Prometheus text format 0.0.4
    token.py       the metrics token (a bearer token Prometheus can send)
    endpoint.py    the route: who may scrape (--metrics off|public|signed) and what it answers

Each request costs a dict lookup and a few integer additions in memory, no lock and no
formatting; the text is built only when someone scrapes. With `--workers N` each worker writes
its own memory-mapped file in `<data-dir>/metrics/` (emptied at every start) and a scrape that
lands on any worker adds up all of them. See docs/operations.md for the metrics and their use.
"""

from s3kms.metrics.registry import Metrics, unrouted

__all__ = ["Metrics", "unrouted"]
