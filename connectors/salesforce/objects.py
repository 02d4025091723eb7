"""Vendor facts that are data: the objects read, their canonical targets, the fields asked for."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACTIVITY_OBJECTS", "COLLECTION_MAX", "DEFAULT_API_VERSION", "QUERY_BATCH_MAX", "QUERY_BATCH_MIN",
           "STANDARD", "SObject"]

DEFAULT_API_VERSION = "v62.0"
QUERY_BATCH_MAX = 2000  # records per query batch (REST guide: 200-2,000 through Sforce-Query-Options)
QUERY_BATCH_MIN = 200
COLLECTION_MAX = 200  # records per sObject collection call
ACTIVITY_OBJECTS = frozenset({"Task", "Event"})

_AUDIT = ("Id", "OwnerId", "CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True, slots=True)
class SObject:
    name: str
    target: str
    fields: tuple[str, ...]


STANDARD: dict[str, SObject] = {o.name: o for o in (
    SObject("Account", "account", (*_AUDIT, "Name", "Website", "Industry", "Type")),
    SObject("Contact", "contact", (*_AUDIT, "AccountId", "FirstName", "LastName", "Email", "Phone", "Title")),
    SObject("Lead", "lead", (*_AUDIT, "FirstName", "LastName", "Email", "Phone", "Company", "LeadSource",
                             "Status")),
    SObject("Opportunity", "opportunity", (*_AUDIT, "AccountId", "Name", "StageName", "Amount", "CloseDate")),
    SObject("Task", "activity", (*_AUDIT, "Subject", "Status", "Priority", "ActivityDate", "WhoId", "WhatId",
                                 "AccountId", "TaskSubtype", "CallType", "CallDurationInSeconds",
                                 "CompletedDateTime", "Description")),
    SObject("Event", "activity", (*_AUDIT, "Subject", "StartDateTime", "EndDateTime", "DurationInMinutes",
                                  "IsAllDayEvent", "Location", "WhoId", "WhatId", "AccountId", "Description")),
)}
