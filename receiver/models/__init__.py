"""Value types shared by the layers: the Alertmanager payload and jobs, incidents, verdicts.

Pure data, no I/O. Import from here: the submodules are an internal arrangement.
"""

from receiver.models.alert import (
    LABEL_CATEGORY,
    LABEL_CLUSTER,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_NAMESPACE,
    LABEL_REMEDIATION,
    LABEL_SEVERITY,
    LABEL_TIER,
    LABEL_TRIGGER,
    REQUIRED_LABELS,
    Alert,
    AlertOutcome,
    Job,
    JobKind,
    WebhookPayload,
)
from receiver.models.incident import (
    CLOSED_STATES,
    ROOT_CAUSES,
    Acknowledgement,
    Confirmation,
    Incident,
    IncidentEvent,
    IncidentKind,
    IncidentState,
    IncidentTimes,
    incident_id,
)
from receiver.models.times import parse_time, rfc3339, utcnow
from receiver.models.verification import Check, RolloutStatus, Verdict
from receiver.models.views import Revision, WorkloadView

__all__ = [
    "CLOSED_STATES",
    "LABEL_CATEGORY",
    "LABEL_CLUSTER",
    "LABEL_MODEL",
    "LABEL_MODEL_VERSION",
    "LABEL_NAMESPACE",
    "LABEL_REMEDIATION",
    "LABEL_SEVERITY",
    "LABEL_TIER",
    "LABEL_TRIGGER",
    "REQUIRED_LABELS",
    "ROOT_CAUSES",
    "Acknowledgement",
    "Alert",
    "AlertOutcome",
    "Check",
    "Confirmation",
    "Incident",
    "IncidentEvent",
    "IncidentKind",
    "IncidentState",
    "IncidentTimes",
    "Job",
    "JobKind",
    "Revision",
    "RolloutStatus",
    "Verdict",
    "WebhookPayload",
    "WorkloadView",
    "incident_id",
    "parse_time",
    "rfc3339",
    "utcnow",
]
