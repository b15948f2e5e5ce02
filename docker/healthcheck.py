"""Health check for iothub processes that have no HTTP endpoint (used by docker/compose.yaml).

    python docker/healthcheck.py connected PORT [PORT ...]

Healthy (exit 0) when this container has an ESTABLISHED TCP connection to every given remote
port. An app container runs a single process, so the container's connections are that
process's connections: the Kafka ingest consumer to Kafka (9092), the bridge to Mosquitto
(1883) and Kafka. A process that lost its broker and is stuck reconnecting reports unhealthy;
one that crashed exits and is restarted by `restart: unless-stopped`.

Reads /proc/net/tcp{,6} (the container's own network namespace): no extra packages, no
connection of its own, so the check cannot disturb the process it watches.
"""

import sys

ESTABLISHED = "01"  # TCP state code in /proc/net/tcp


def established_remote_ports(paths=("/proc/net/tcp", "/proc/net/tcp6")):
    ports = set()
    for path in paths:
        try:
            with open(path) as table:
                next(table, None)  # header line
                for line in table:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == ESTABLISHED:
                        # rem_address is "<hex ip>:<hex port>"
                        ports.add(int(fields[2].rsplit(":", 1)[1], 16))
        except FileNotFoundError:  # no IPv6 in this namespace
            continue
    return ports


def main(argv):
    if len(argv) < 2 or argv[0] != "connected" or not all(a.isdigit() for a in argv[1:]):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 1  # Docker reserves exit code 2 for health checks
    missing = sorted({int(port) for port in argv[1:]} - established_remote_ports())
    if missing:
        print(f"unhealthy: no established connection to port(s) {', '.join(map(str, missing))}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
