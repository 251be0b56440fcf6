"""The example's 预警投诉 end to end: a form complaint threatening the media becomes a ticket
with its SLA, its escalation timeline and their timers; the hotline supervisor's advance moves
the timeline on, the first reply meets the first-response target."""

from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp

from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, gateway  # noqa: F401


async def test_a_warned_complaint_gets_its_sla_timeline_and_timers(gateway: Gateway) -> None:  # noqa: F811
    gw = gateway
    async with aiohttp.ClientSession() as http:
        submission = {"name": "赵敏", "email": "zhao.min@example.cn", "topic": "complaint",
                      "subject": "门店服务", "message": "我要投诉你们门店的服务，否则找媒体曝光",
                      "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-warned-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()
        found = await find_ticket(http, gw, reference=receipt["reference"])
        async with http.get(f"{gw.api}/api/v1/tickets/{found['id']}",
                            headers=gw.headers()) as response:
            ticket = await response.json()
        assert ticket["route"]["route"] == "warned_complaint"
        # The timeline's first step moves the ticket to the hotline's supervisors.
        assert (ticket["desk"], ticket["skill_group"]) == ("complaints", "sg_hotline_supervisors")
        received = datetime.fromisoformat(ticket["messages"][0]["received_at"])
        sla = ticket["sla"]
        assert sla["policy"] == "complaint"
        assert datetime.fromisoformat(sla["first_response_due_at"]) == received + timedelta(
            minutes=30)
        escalation = ticket["escalation"]
        assert (escalation["timeline"], escalation["step"]) == ("warned_complaint",
                                                                "supervisor_pickup")
        assert [s["id"] for s in escalation["steps"]] == [
            "supervisor_pickup", "handback_to_store", "store_centre", "store_manager",
            "executives", "hotline_handling", "closing"]
        assert datetime.fromisoformat(escalation["deadline_at"]) == received + timedelta(
            hours=48)
        kinds = sorted((t["kind"], t["ref"]) for t in ticket["timers"])
        assert ("escalation_step", "warned_complaint.supervisor_pickup") in kinds
        assert ("escalation_deadline", "warned_complaint.deadline") in kinds
        assert ("sla_breach", "first_response") in kinds
        assert all(t["state"] == "pending" for t in ticket["timers"])

        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/acknowledge",
                             headers=gw.headers()) as response:
            assert response.status == 200, await response.text()
            acknowledged = await response.json()
        assert acknowledged["acknowledged_at"] is not None
        # The steps are done by hand: the supervisor hands it back to the store centre.
        assert acknowledged["escalation"]["step"] == "supervisor_pickup"
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/escalations/"
                             "warned_complaint/advance", json={"note": "已提取预警信息"},
                             headers=gw.headers()) as response:
            assert response.status == 200, await response.text()
            advanced = await response.json()
        assert advanced["escalation"]["step"] == "handback_to_store"
        assert (advanced["desk"], advanced["skill_group"]) == (
            "complaints", "sg_hotline_supervisors")
        # An acknowledgement is no reply: the first-response clock runs on.
        first_response = {t["kind"]: t["state"] for t in acknowledged["timers"]
                          if t["ref"] == "first_response"}
        assert first_response == {"sla_warning": "pending", "sla_breach": "pending"}

        # The first reply (by email: the form gave the address) meets it.
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             json={"text": "您好，门店经理会在一小时内联系您。"},
                             headers=gw.headers()) as response:
            assert response.status == 201, await response.text()
        async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                            headers=gw.headers()) as response:
            replied = await response.json()
        first_response = {t["kind"]: (t["state"], t["reason"]) for t in replied["timers"]
                          if t["ref"] == "first_response"}
        assert first_response == {"sla_warning": ("done", "first_response"),
                                  "sla_breach": ("done", "first_response")}
        assert replied["sla"]["first_response_at"] is not None
