"""The Vault/OpenBao keystore: key material in transit, key metadata in KV version 2.

One module per concept, each depending only on those above it in this list:

    settings.py   VaultSettings (the app's configuration imports it from here) and the redaction
                  of credentials in addresses
    transport.py  the HA HTTP transport: addresses, leader preference, retries within a timing
                  budget, standby and outcome-unknown handling
    auth.py       the token: lookup or AppRole login at connect, renewal and re-login, the 403 retry
    kv.py         KV v2 records written with check-and-set
    imports.py    imported key material (BYOK): transit's key wrapping, the probes that tell
                  whether a transit version holds a material, and the sealing key (pure)
    exports.py    KMIP objects' material: transit's export forms, the KV-held sealed materials
                  and the material key (pure)
    store.py      VaultKeyStore, the KeyStore protocol on transit and KV v2
"""

from s3kms.keystore.vault.settings import VaultSettings
from s3kms.keystore.vault.store import VaultKeyStore

__all__ = ["VaultKeyStore", "VaultSettings"]
