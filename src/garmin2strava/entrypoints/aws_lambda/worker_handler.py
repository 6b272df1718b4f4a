"""Lambda: SQS batches of Strava webhook events (ReportBatchItemFailures).

The batch becomes an EventQueue (adapters.queue_sqs.SqsBatch) for services.mirror_worker's
`process_events`. Every message not completed, a crash of the whole batch included, is
returned in `batchItemFailures` for SQS to deliver again (and dead-letter after
`maxReceiveCount`); an event deferred for the Strava budget is sent again delayed and
reported done, unless that send fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from garmin2strava.adapters.queue_sqs import SqsBatch
from garmin2strava.entrypoints.aws_lambda import _runtime
from garmin2strava.entrypoints.aws_lambda.emf import counter_deltas, emit_metrics
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats

__all__ = ["handler", "process_sqs_batch", "runtime"]

log = logging.getLogger(__name__)


@cache
def runtime() -> _runtime.WorkerRuntime:
    """Built by the first invocation of this container, reused by the warm ones."""
    return _runtime.build_worker_runtime()


def handler(
    event: Mapping[str, Any],
    context: object,  # noqa: ARG001 (Lambda's signature; nothing here needs the deadline)
) -> dict[str, Any]:
    return process_sqs_batch(event, runtime())


def process_sqs_batch(event: Mapping[str, Any], built: _runtime.WorkerRuntime) -> dict[str, Any]:
    """Settle the batch; the answer lists the messages SQS must deliver again."""
    started = time.monotonic()
    app = built.app
    batch = SqsBatch(event.get("Records") or [], queue_url=built.queue_url, client=built.sqs)
    stats = MirrorStats()
    try:
        process_events(
            batch,
            app.store,
            app.strava_for,
            now=app.clock(),
            max_attempts=built.max_attempts,
            limit=max(len(batch), 1),
            stats=stats,
            audit_retention_days=app.settings.audit_retention_days,
            stream_types=app.settings.mirror_streams,
        )
    except Exception:
        # The store or the network failed under the whole batch: what was completed
        # stays completed, the rest is returned below and comes back.
        log.exception("worker.batch_failed", extra={"messages": len(batch)})
    failed = batch.failed_message_ids()
    for message_id in failed:
        log.warning(
            "worker.message_failed",
            extra={"messageId": message_id, "error": batch.errors.get(message_id, "unsettled")},
        )
    log.info(
        "worker.batch_done",
        extra={
            "messages": len(batch),
            "failed": len(failed),
            "resent": batch.resent,
            "durationMs": round((time.monotonic() - started) * 1000, 2),
        },
    )
    metrics = counter_deltas({}, stats.snapshot())
    metrics["MessagesFailed"] = len(failed)
    metrics["MessagesResent"] = batch.resent
    emit_metrics(metrics, dimensions={"function": "worker"})
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
