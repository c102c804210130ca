"""EasyRemote gateway: nodes dial in, clients call through it.

The gateway registers compute nodes, balances load over them, routes calls and
relays results. It treats every payload as opaque bytes: it never imports
cloudpickle and never unpickles user data.

Example:
    >>> from easyremote.server import Server
    >>> gateway = Server(port=8080)
    >>> gateway.start()            # blocks; or gateway.start_background()
"""

from easyremote.server._gateway import GatewayError, Server
from easyremote.server.version import __version__

__all__ = ["GatewayError", "Server", "__version__"]
