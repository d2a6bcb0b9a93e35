"""The face of polyspec, outside the runtime: the ``polyspec`` command, the demo, the bench, the SDK-client
commands. Tools may import anything below them (core, the services, the coordinator, the SDK); nothing in
the runtime imports them.
"""
