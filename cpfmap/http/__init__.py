"""http: how a request reaches a backend.

Owns the Transport interface and its request/response values, the live transport on requests
with retries and deadlines (transport.py), the watchdog thread that cuts exchanges at their
deadline (watchdog.py), and transports that wrap another one to keep or log exchanges
(wrappers.py), reply bodies read by content type (bodies.py: JSON, XML via defusedxml, text) and
AWS Signature Version 4 (signing.py). The only stage that imports `requests`. Imports the foundation modules only.
"""
