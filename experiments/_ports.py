"""Free loopback ports, for TF_CONFIG workers (no flags: tests import it)."""

import socket
from typing import List


def free_ports(count: int) -> List[str]:
  """`count` loopback ports free a moment ago."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [str(s.getsockname()[1]) for s in sockets]
  for s in sockets:
    s.close()
  return ports
