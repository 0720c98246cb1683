"""I/O-free protocol layer: the Majordomo codec (all dialects) and the error-reply frames."""

from plantd.protocol.mdp import Dialect, ErrorReply, Kind, MalformedMessage, PeerMessage

__all__ = ["Dialect", "ErrorReply", "Kind", "MalformedMessage", "PeerMessage"]
