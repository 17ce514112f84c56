"""The article's user service, done properly: SQLite, a TTL/LRU cache, request coalescing.

So far: the database layer (:mod:`.database`) and the cache (:mod:`.cache`); the RPC
service itself arrives with the RPC layer.
"""
