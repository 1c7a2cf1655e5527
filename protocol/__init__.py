"""fedforget's wire protocol: the one module the ClientApp (``clients/``) and the ServerApp
(``server/``) both import.

* :mod:`protocol.messages`: message types and record keys;
* :mod:`protocol.codec`: library objects (an oracle, id lists) as Flower records, numbers only;
* :mod:`protocol.replies`: one decoder per reply type; a malformed reply is a :class:`ProtocolError`.
"""

from protocol.replies import ProtocolError

__all__ = ["ProtocolError"]
