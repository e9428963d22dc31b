"""Conformance runner: RAS's workflows and protocol probes against any CPF provider."""
