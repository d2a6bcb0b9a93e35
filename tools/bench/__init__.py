"""``polyspec bench``: a drafter/target pair on HumanEval prompts, through the services and in-process.

The harness starts the model services and the coordinator on loopback, runs every algorithm x
temperature x prompt through the SDK, then (services stopped) the same prompts through transformers'
``generate`` as the reference a user would otherwise pick; it writes one JSON file and a PNG plot and
prints a table. Speed targets live here, never in the tests.

``polyspec bench load`` (``load.py``, ``load_report.py``): concurrent clients for a fixed time against a
drafter, two target replicas and a coordinator with admission caps, at capacity, overloaded and with a
service stopped or killed; goodput, refusals, failures, latency, peak memory and a greedy canary.
"""
