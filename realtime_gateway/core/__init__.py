"""The call core: what every stage shares, depending on nothing but the standard library.

The call message, usage arithmetic, call ids, time helpers, the listener's result and the typed
event vocabulary. Nothing here imports another part of the package.
"""
