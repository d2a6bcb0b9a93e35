"""``polyspec disco collect`` and ``polyspec disco train``: DISCO's stop classifier for a pair."""
