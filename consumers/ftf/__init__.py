"""The common database (FTF / T.E.R.): one fiche per person.

Write side: :mod:`consumers.ftf.projector` applies ``ftf-db`` deliveries, using the pure
functions of :mod:`consumers.ftf.fiche` and the rules of :mod:`consumers.ftf.governance`.
Read side: :mod:`consumers.ftf.consult` (consultation under each service's access mode),
:mod:`consumers.ftf.queries` (overdue reviews, audit logs) and :mod:`consumers.ftf.worklist`
(OCAM's queues: pending fiches, forwarded requests and their answers).
"""
