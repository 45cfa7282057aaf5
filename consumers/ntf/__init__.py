"""The National Taskforce's statistics: counts of every signal by month, arrondissement and
phenomenon, published for closed months with small counts suppressed.

:mod:`consumers.ntf.aggregator` counts the router's NtfFacts into a store of its own and
publishes each closed month once; :mod:`consumers.ntf.suppression` decides what of a month's
table may be shown (pure logic); :mod:`consumers.ntf.months` has the month arithmetic.
"""
