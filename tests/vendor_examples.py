"""The vendor's documented examples, exact, shared by the tests."""

from __future__ import annotations

from typing import Any

# The vendor page's GET /workflow-runs/{runId} example, exact.
VENDOR_COMPLETED: dict[str, Any] = {
    "id": "69d224901610662a576cd7e6",
    "status": "COMPLETED",
    "workflow": {"id": "daily-lab-loader", "name": "Daily Lab Loader"},
    "steps": [
        {
            "id": "step_01",
            "name": "Extract Lab Result",
            "type": "document_insights",
            "status": "COMPLETED",
            "output": {"extractionId": "69654f0bc073ef404baec649", "fieldCount": 3},
            "nestedRuns": {"count": 0, "data": []},
        }
    ],
}

# The vendor's workflow.run.failed event example (vendor-api.md §6.4), exact values.
VENDOR_FAILED_EVENT: dict[str, Any] = {
    "eventId": "evt_01JY7MWFFAIL00000000001",
    "eventType": "workflow.run.failed",
    "occurredAt": "2026-04-07T10:12:30Z",
    "apiVersion": "v1",
    "data": {
        "runId": "69d224901610662a576cd7e6",
        "workflowId": "daily-correspondence-loader",
        "status": "FAILED",
        "createdAt": "2026-04-07T10:10:00Z",
        "updatedAt": "2026-04-07T10:12:30Z",
        "completedAt": "2026-04-07T10:12:30Z",
        "workflow": {"id": "daily-correspondence-loader", "name": "Daily Correspondence Loader"},
        "progress": {"stepsCompleted": 1, "stepsTotal": 3},
        "steps": [
            {
                "id": "step_01",
                "name": "Extracted Document",
                "type": "document_insights",
                "status": "COMPLETED",
                "nestedRuns": {"count": 0, "data": []},
            },
            {
                "id": "step_02",
                "name": "Route Result",
                "type": "web_function",
                "status": "FAILED",
                "message": "Client endpoint rejected the request.",
                "nestedRuns": {"count": 0, "data": []},
            },
        ],
        "error": {
            "code": "WORKFLOW_RUN_FAILED",
            "message": "Client endpoint rejected the request.",
        },
    },
}
