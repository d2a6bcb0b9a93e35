"""Model-free drafters behind ``polyspec.v1.ModelService``: prompt lookup and suffix-tree drafting.

A lookup drafter presents the target's own tokenizer (loaded from the target's model folder), so the
coordinator pairs it with that target as a same-vocabulary drafter (``sd``) and ships its point-mass
proposals to the target's speculative sampling: the output law stays the target's at any temperature.
The lookup itself is pure (``core.lookup``); this package is its service: settings, per-sequence
sessions, the engine, the server and ``polyspec serve drafter``.
"""
