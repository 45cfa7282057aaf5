"""Generated data for the demo, the benchmarks and the tests: one place, used by all three.

- :mod:`scenarios.signals`: the realistic mixed scenario (services, real communes and prisons,
  every marking), deterministic per seed;
- :mod:`scenarios.builders`: one signal at a time, with overrides;
- :mod:`scenarios.ftf`: histories for the common database, and the deliveries the router
  would write for them (:func:`scenarios.keys.signed` gives them the router's signature);
- :mod:`scenarios.keys`: throw-away signing keys, one per agency and service, with a registry.
- :mod:`scenarios.malformed`: a malformed-input run: bad records of every kind, each with the
  dead letter it must get, mixed with valid signed signals (rule-breaking field changes in
  :mod:`scenarios.invalid_fields`).

Summaries are synthetic placeholders, never real content.
"""
