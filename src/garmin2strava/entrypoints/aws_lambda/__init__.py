"""AWS Lambda handlers, one module each (terraform/main.tf names them):

- `sync_handler.handler`: EventBridge schedule; one sync cycle per account.
- `webhook_handler.handler`: API Gateway HTTP API (payload 2.0); Strava's webhook.
- `worker_handler.handler`: SQS batches of webhook events; partial batch failures.
- `maintenance_handler.handler`: EventBridge schedule; the mirror's reconciliation
  and the catch-up of pending streams (the daemon's mirror jobs).

This package imports nothing itself, so loading one handler loads only what it uses.
"""
