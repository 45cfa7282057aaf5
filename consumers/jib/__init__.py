"""The Joint Information Box (JIB): the working list of radicalising young people that the
services of a local taskforce follow together, changed only by their consensus.

- :mod:`consumers.jib.panels`: who must consent, per arrondissement (a data file);
- :mod:`consumers.jib.rules`: the consensus rules, pure functions of the input stream;
- :mod:`consumers.jib.consensus`: the consensus process (proposals, votes and ticks in;
  decisions, deliveries and audit records out, through the outbox), with
  :mod:`consumers.jib.store` (its rows);
- :mod:`consumers.jib.consult`: the read side (show, list, members), with no oracle, and
  :mod:`consumers.jib.render` (how answers are printed).
"""
