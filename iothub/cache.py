"""Django's Redis cache with one connection pool per process.

Django makes a cache object, and with it a Redis connection pool, per thread, and under ASGI
each request runs in a thread of its own: every request (its throttle check) opened a Redis
connection of its own, which only the garbage collector closed again.
"""

from functools import cache, cached_property

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


@cache
def shared_client(servers, options):
    return RedisCacheClient(list(servers), **dict(options))


class SharedPoolRedisCache(RedisCache):
    """RedisCache whose objects of one process share their client and its connection pool."""

    @cached_property
    def _cache(self):
        return shared_client(tuple(self._servers), tuple(sorted(self._options.items())))
