"""The run store, the ground floor every command stands on: one folder per run with its record
(``records``), the store that lists, claims and finishes them (``store``), the lock that makes a
second process wait (``lock``), atomic file writes (``atomic``, ``tensorfile``) and the check that a
folder is a runs folder (``hint``). Nothing here imports torch at module level except
``tensorfile``, and nothing imports from a layer above (see ``docs/architecture.md``).
"""
