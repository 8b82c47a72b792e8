"""Load for the daemon: `python -m benchmarks.loadgen --socket PATH --n N [--rate R]`.

Without `--rate`: encode N benchmark records first, print `ready`, wait for a line on stdin, then send
them as fast as the daemon takes them (a blocking socket: backpressure, no spool, nothing lost) and
print `done`. With `--rate`: send N records paced at R per second, each stamped `end_ns` = now when sent,
so the sink can tell emit-to-backend latency.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time

import orjson

from benchmarks.workload import sample_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    rng = random.Random()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(args.socket)
    option = orjson.OPT_APPEND_NEWLINE
    if args.rate:
        interval = 1.0 / args.rate
        start = time.monotonic()
        for i in range(args.n):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.send(orjson.dumps(sample_record(rng, time.time_ns()), option=option))
    else:
        now = time.time_ns()
        lines = [orjson.dumps(sample_record(rng, now), option=option) for _ in range(args.n)]
        print("ready", flush=True)
        sys.stdin.readline()
        send = sock.send
        for line in lines:
            send(line)
    sock.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
