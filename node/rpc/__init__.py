"""JSON-RPC 2.0 server of the node (HTTP POST ``/`` and WebSocket ``/ws``) and its client.

See docs/RPC.md for every method, the error codes, authentication and the caps.
"""
