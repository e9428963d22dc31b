"""protocol: the CPF contract and how it is spoken.

Owns the methods, their params, controls, states and capabilities (contract.py), the reply
schemas compiled into fast checks (replies.py), JSON-lines framing, dispatch and error codes
(rpc.py), self-contained task ids (taskids.py) and how CPF writes values: string ids, MACs,
IPs (values.py). The lowest stage: imports only the foundation modules (errors, redact,
resources). Nothing here knows mappings, HTTP or argv.
"""
