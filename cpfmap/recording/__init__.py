"""recording: HTTP traffic kept and played back.

Owns cassettes (cassette.py: load, match, replay, record, scrub secrets before anything is
written) and dry-run transcripts and recorded CPF sessions (transcript.py). Imports http,
language (YAML reading), protocol and the foundation modules; never runtime.
"""
