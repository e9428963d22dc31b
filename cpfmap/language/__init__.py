"""language: a mapping, from YAML on disk to a frozen, compiled model.

Owns finding a mapping (catalog.py: pack names, variants, manifests), reading YAML with line
marks (source.py), loading with `extends` and the schema check (loader.py), the parsed-mapping
cache between processes (loadcache.py), compiling templates (templating.py: sandboxed, strict
Jinja, with the signing and encoding filters of encoding.py), JMESPath expressions and state
tables (expressions.py) into the model (model.py, compiler.py, sections.py), and loading a pack's
own Python filters from its folder (extensions.py), and checking the settings that build the
backend URL (urlsettings.py). Everything wrong with a mapping is found here, at load time.
Imports protocol and the foundation modules; never http, recording or runtime.
"""
