"""Every Avro record name the bus writes or reads, in one place.

A name here is the full name of a record schema in ``schemas/avro`` (views in
``schemas/avro/views``); the codec finds a schema by it.
"""

from __future__ import annotations

SIGNAL = "be.planr.Signal"
DELIVERY = "be.planr.Delivery"
ROUTING_DECISION = "be.planr.RoutingDecision"
DEAD_LETTER = "be.planr.DeadLetter"
FTF_REMOVAL = "be.planr.FtfRemoval"
FTF_CONSULTATION = "be.planr.FtfConsultation"
OCAM_REQUEST = "be.planr.OcamRequest"
OCAM_ANSWER = "be.planr.OcamAnswer"

JIB_PROPOSAL = "be.planr.JibProposal"
JIB_VOTE = "be.planr.JibVote"
JIB_TICK = "be.planr.JibTick"
JIB_DECISION = "be.planr.JibDecision"
JIB_DELIVERY = "be.planr.JibDelivery"
JIB_AUDIT = "be.planr.JibAudit"

VIEW_NAMESPACE = "be.planr.view"
NTF_FACT = f"{VIEW_NAMESPACE}.NtfFact"
NTF_AGGREGATE = f"{VIEW_NAMESPACE}.NtfAggregate"


def view_schema_name(view: str) -> str:
    """The record name of a recipient view: ``csilr`` -> ``be.planr.view.CsilrView``."""
    return f"{VIEW_NAMESPACE}." + "".join(p.capitalize() for p in view.split("_")) + "View"
WITHDRAWAL = "be.planr.Withdrawal"
RETRACTION = "be.planr.Retraction"
