"""A small local Azure Functions host for v2-model Python apps (Core Tools cannot be installed here).

It discovers functions through `app.get_functions()` and serves HTTP triggers and runs queue
triggers with the real host's semantics; `func start` runs the same app unchanged where it exists.
"""
