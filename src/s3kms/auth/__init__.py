"""Who is asking: SigV4 (shared by the server and the client) and the identities it yields."""
