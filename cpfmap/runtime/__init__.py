"""runtime: a compiled mapping answering CPF calls.

Owns the engine (engine.py: one handler per CPF method), the step runner (steps.py: render ->
send -> check -> extract), reading replies (reading.py), cached and prefetched replies with the
background refresh pool (cache.py), the backend session: TLS, auth, login, re-login (session.py), request
signers: SigV4 and a pack's own (signers.py),
and the one place that assembles a provider for the command line and the embedding API alike
(provider.py). Imports language, http, recording, protocol and the foundation modules.
"""
