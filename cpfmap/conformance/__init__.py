"""conformance: RAS's workflows and protocol probes, run against any CPF provider process.

Owns the provider process client with reply deadlines (client.py), what RAS does with replies
(ras.py), the workflows (workflows.py), protocol probes (probes.py), the run (runner.py) and
the verdict (report.py). Talks to a provider only through its stdin/stdout, so it imports
nothing but protocol (reply schemas, snapshot names) and the foundation modules.
"""
