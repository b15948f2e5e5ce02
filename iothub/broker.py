"""The Celery broker's transport when the broker is Redis (CELERY_BROKER_TRANSPORT)."""

from kombu.transport import redis


class RedisTransport(redis.Transport):
    """kombu's Redis transport, keeping its connection's parameters after Celery lets go of it.

    On a connection loss the worker collects the lost connection, which sets its transport's
    `client` to None, yet that connection's channel still has work to do: Celery 5.7 closes the
    connection once more, and the channel's close gives the unacknowledged tasks back to the
    queue; tasks that were running finish and acknowledge (acks_late). Each opens a Redis
    connection from `client`'s parameters, raised AttributeError without them, and the worker took
    that for an unrecoverable error: it exited on a one-second Redis restart under load.
    """

    @property
    def client(self):
        return self._client

    @client.setter
    def client(self, connection):
        if connection is not None:
            self._client = connection
