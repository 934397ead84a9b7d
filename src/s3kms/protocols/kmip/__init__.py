"""The KMIP API (docs/kmip.md): TTLV messages over mutual TLS, for Ceph RGW, OpenStack Swift,
PyKMIP and the enterprise storage that speaks KMIP.

PyKMIP is the codec. `import kmip` imports its demo server's SQLAlchemy models too, which warn
under SQLAlchemy 2 (a deprecation in PyKMIP's code); the warning is silenced here, once, for that
import only.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kmip  # noqa: F401

from s3kms.protocols.kmip import payloads as _payloads

_payloads.install()  # Add Attribute and MAC Verify, which PyKMIP 0.11 has no classes for
