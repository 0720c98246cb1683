"""The Majordomo broker: I/O-free routing core, its asyncio server and the pub/sub bus proxies."""
