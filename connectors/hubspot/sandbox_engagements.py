"""Engagements (calls, emails, meetings, notes, tasks), owners and pipelines of the HubSpot sandbox.

Generated on demand like the other sandbox records (``sandbox_data.py``): engagement ``i`` of a
type is associated with contact ``i % contacts``, that contact's company, and deal ``i % deals``
for every other engagement. Property names and enumerations follow HubSpot's engagement guides
(<https://developers.hubspot.com/docs/guides/api/crm/engagements/calls>, ``.../email``,
``.../meetings``, ``.../notes``, ``.../tasks``); owners follow the owners guide
(<https://developers.hubspot.com/docs/guides/api/crm/owners>), pipelines the pipelines guide
(<https://developers.hubspot.com/docs/guides/api/crm/pipelines>). Association type ids are the
HUBSPOT_DEFINED ones of the associations v4 guide [S: seen in the guide's table, not re-checked].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["ASSOC_TYPE_IDS", "ENGAGEMENT_TYPES", "OWNERS", "PIPELINES", "engagement_props"]

ENGAGEMENT_TYPES = ("calls", "emails", "meetings", "notes", "tasks")
SINGULAR = {"calls": "call", "emails": "email", "meetings": "meeting", "notes": "note", "tasks": "task"}
OBJECT_TYPE_IDS = {"calls": "0-48", "emails": "0-49", "meetings": "0-47", "notes": "0-46", "tasks": "0-27"}

#: (engagement type, target type) -> HUBSPOT_DEFINED association type id
ASSOC_TYPE_IDS = {
    ("calls", "contacts"): 194, ("calls", "companies"): 182, ("calls", "deals"): 206,
    ("emails", "contacts"): 198, ("emails", "companies"): 186, ("emails", "deals"): 210,
    ("meetings", "contacts"): 200, ("meetings", "companies"): 188, ("meetings", "deals"): 212,
    ("notes", "contacts"): 202, ("notes", "companies"): 190, ("notes", "deals"): 214,
    ("tasks", "contacts"): 204, ("tasks", "companies"): 192, ("tasks", "deals"): 216,
}


def _w(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


_COMMON = _w("hs_timestamp,hubspot_owner_id,hs_object_id,hs_createdate,hs_lastmodifieddate")
SCHEMA = {
    "calls": _COMMON + _w("hs_call_title,hs_call_body,hs_call_direction,hs_call_status,hs_call_disposition,"
                          "hs_call_duration,hs_call_from_number,hs_call_to_number,hs_call_recording_url"),
    "emails": _COMMON + _w("hs_email_subject,hs_email_text,hs_email_html,hs_email_direction,hs_email_status,"
                           "hs_email_headers"),
    "meetings": _COMMON + _w("hs_meeting_title,hs_meeting_body,hs_meeting_location,hs_meeting_start_time,"
                             "hs_meeting_end_time,hs_meeting_outcome,hs_meeting_external_url"),
    "notes": _COMMON + _w("hs_note_body,hs_attachment_ids"),
    "tasks": _COMMON + _w("hs_task_subject,hs_task_body,hs_task_status,hs_task_priority,hs_task_type"),
}
DEFAULT_PROPERTIES = {t: _w("hs_createdate,hs_lastmodifieddate,hs_object_id") for t in ENGAGEMENT_TYPES}
QUERY_PROPS = {"calls": ("hs_call_title", "hs_call_body"), "emails": ("hs_email_subject",),
               "meetings": ("hs_meeting_title",), "notes": ("hs_note_body",), "tasks": ("hs_task_subject",)}
DATE_PROPS = frozenset({"hs_timestamp", "hs_createdate", "hs_meeting_start_time", "hs_meeting_end_time"})
NUMBER_PROPS = frozenset({"hs_call_duration", "hubspot_owner_id"})

_CALL_STATUS = _w("COMPLETED,COMPLETED,COMPLETED,NO_ANSWER,BUSY,FAILED,CANCELED")
_EMAIL_DIRECTION = _w("EMAIL,EMAIL,INCOMING_EMAIL,FORWARDED_EMAIL")
_MEETING_OUTCOME = _w("COMPLETED,COMPLETED,SCHEDULED,RESCHEDULED,NO_SHOW,CANCELED")
_TASK_STATUS = _w("NOT_STARTED,IN_PROGRESS,WAITING,COMPLETED,DEFERRED")
_TOPICS = _w("Pricing,Renewal,Onboarding,Security review,Quarterly business review,Pilot scope,Contract terms")
_MIN = 60_000

OWNERS: list[dict[str, Any]] = [
    {"id": str(41629779 + k), "email": f"{first.lower()}.{last.lower()}@crmhub-sandbox.example", "type": "PERSON",
     "firstName": first, "lastName": last, "userId": 9586504 + k, "userIdIncludingInactive": 9586504 + k,
     "createdAt": "2019-12-25T13:01:35.228Z", "updatedAt": "2023-08-22T13:40:26.790Z", "archived": False,
     "teams": [{"id": "368389", "name": "Sales Team", "primary": True}]}
    for k, (first, last) in enumerate((("Alex", "Rivera"), ("Sam", "Okoro"), ("Kim", "Lindqvist"), ("Jo", "Tanaka")))
]
OWNER_IDS = tuple(o["id"] for o in OWNERS)

_STAGES = (("appointmentscheduled", "Appointment Scheduled", "0.2", "false"),
           ("qualifiedtobuy", "Qualified To Buy", "0.4", "false"),
           ("presentationscheduled", "Presentation Scheduled", "0.6", "false"),
           ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", "false"),
           ("contractsent", "Contract Sent", "0.9", "false"),
           ("closedwon", "Closed Won", "1.0", "true"),
           ("closedlost", "Closed Lost", "0.0", "true"))
_TS = "2019-10-30T03:30:17.883Z"
PIPELINES: dict[str, list[dict[str, Any]]] = {"deals": [
    {"id": "default", "label": "Sales Pipeline", "displayOrder": 0, "createdAt": _TS, "updatedAt": _TS,
     "archived": False, "stages": [
         {"id": sid, "label": label, "displayOrder": k, "metadata": {"isClosed": closed, "probability": p},
          "createdAt": _TS, "updatedAt": _TS, "archived": False, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}
         for k, (sid, label, p, closed) in enumerate(_STAGES)]},
    {"id": "7d3f1c52", "label": "Renewals", "displayOrder": 1, "createdAt": _TS, "updatedAt": _TS,
     "archived": False, "stages": [
         {"id": str(1001 + k), "label": label, "displayOrder": k, "metadata": {"isClosed": closed, "probability": p},
          "createdAt": _TS, "updatedAt": _TS, "archived": False, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}
         for k, (label, p, closed) in enumerate((("Renewal due", "0.5", "false"), ("Renewed", "1.0", "true"),
                                                 ("Churned", "0.0", "true")))]},
]}


def engagement_props(t: str, h: int, when: int, contact: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    """Type-specific properties of one engagement (``h`` its hash, ``when`` its hs_timestamp).

    ``contact()`` gives the associated contact's properties (for addresses and numbers), or None.
    """
    owner = OWNER_IDS[h % len(OWNER_IDS)]
    topic = _TOPICS[(h >> 8) % len(_TOPICS)]
    d: dict[str, Any] = {"hs_timestamp": when, "hubspot_owner_id": owner}
    if t == "calls":
        c = contact() or {}
        inbound = (h >> 4) & 3 == 0
        theirs, ours = c.get("phone") or None, f"+1 617 555 {(h >> 12) % 10000:04d}"
        status = _CALL_STATUS[(h >> 16) % len(_CALL_STATUS)]
        d.update({"hs_call_title": f"{topic} call", "hs_call_body": f"Talked about {topic.lower()}.",
                  "hs_call_direction": "INBOUND" if inbound else "OUTBOUND", "hs_call_status": status,
                  "hs_call_duration": str(((h >> 20) % 1800 + 30) * 1000) if status == "COMPLETED" else "0",
                  "hs_call_from_number": theirs if inbound else ours, "hs_call_to_number": ours if inbound else theirs,
                  "hs_call_disposition": "f240bbac-87c9-4f6e-bf70-924b57d47db7" if status == "COMPLETED" else None})
    elif t == "emails":
        c = contact() or {}
        direction = _EMAIL_DIRECTION[(h >> 4) % len(_EMAIL_DIRECTION)]
        owner_rec = OWNERS[h % len(OWNERS)]
        them = {"email": c.get("email") or "unknown@example.com", "firstName": c.get("firstname") or "",
                "lastName": c.get("lastname") or ""}
        us = {"email": owner_rec["email"], "firstName": owner_rec["firstName"], "lastName": owner_rec["lastName"]}
        sender, to = (them, us) if direction == "INCOMING_EMAIL" else (us, them)
        headers = {"from": sender, "sender": sender, "to": [to], "cc": [], "bcc": []}
        d.update({"hs_email_subject": f"Re: {topic}", "hs_email_text": f"Following up on {topic.lower()}.",
                  "hs_email_direction": direction, "hs_email_status": "SENT",
                  "hs_email_headers": orjson.dumps(headers).decode()})
    elif t == "meetings":
        outcome = _MEETING_OUTCOME[(h >> 4) % len(_MEETING_OUTCOME)]
        d.update({"hs_meeting_title": f"{topic} meeting", "hs_meeting_body": f"Agenda: {topic.lower()}.",
                  "hs_meeting_location": "Remote", "hs_meeting_start_time": when,
                  "hs_meeting_end_time": when + ((h >> 12) % 4 + 1) * 15 * _MIN, "hs_meeting_outcome": outcome,
                  "hs_meeting_external_url": f"https://meet.example.com/{h % 1_000_000:06d}"})
    elif t == "notes":
        d.update({"hs_note_body": f"<p>Notes on {topic.lower()}.</p>", "hs_attachment_ids": None})
    else:
        d.update({"hs_task_subject": f"Follow up: {topic}", "hs_task_body": f"Send the {topic.lower()} summary.",
                  "hs_task_status": _TASK_STATUS[(h >> 4) % len(_TASK_STATUS)],
                  "hs_task_priority": ("LOW", "MEDIUM", "HIGH")[(h >> 12) % 3],
                  "hs_task_type": ("EMAIL", "CALL", "TODO")[(h >> 16) % 3]})
    return d
