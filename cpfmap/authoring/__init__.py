"""authoring: tools for people writing mappings.

Owns `explain` (explain.py: a method's requests without sending them), `call` (call.py: one
method against the backend or a recording), `new-pack` and README settings tables
(scaffold.py, with the scaffold/ templates) and the reference text generated from the code
(reference.py). Imports runtime and everything below it.
"""
