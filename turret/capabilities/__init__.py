"""Capabilities: named, typed actions on a service, the API an agent is meant to use.

`model` holds the values, `settings` reads them from the config, `catalog` knows real services,
`schema` validates parameters and renders JSON Schema, `template` builds the upstream request,
`engine` runs a call, `routes` is the HTTP API. This package's `__init__` imports nothing, so the
config loader can import `settings` without pulling in the HTTP side.
"""
