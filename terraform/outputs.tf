output "webhook_url" {
  description = "Base URL for `garmin2strava webhook subscribe --url`, which appends /webhooks/strava/<secret>."
  value       = trimsuffix(aws_apigatewayv2_stage.webhook.invoke_url, "/")
}

output "table_name" {
  description = "DynamoDB table holding accounts, tokens, the upload ledger, the mirror and audit events."
  value       = aws_dynamodb_table.main.name
}

output "kms_key_arn" {
  description = "KMS key for tokens, table, queues and logs; use it (alias/<name>) for the SSM SecureStrings."
  value       = aws_kms_key.main.arn
}

output "queue_url" {
  description = "SQS queue of Strava webhook events."
  value       = aws_sqs_queue.events.url
}

output "dead_letter_queue_url" {
  description = "SQS dead-letter queue of events that failed every attempt."
  value       = aws_sqs_queue.events_dlq.url
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms publish to."
  value       = aws_sns_topic.alarms.arn
}

output "ssm_parameter_names" {
  description = "SecureString parameters the functions read; create them before the first invocation (README.md \"Secrets\")."
  value = {
    strava_client_secret = local.ssm_strava_client_secret
    strava_verify_token  = local.ssm_strava_verify_token
    notify_urls          = local.ssm_notify_urls
    heartbeat_url        = local.ssm_heartbeat_url
    garmin_proxy         = local.ssm_garmin_proxy
  }
}

output "function_names" {
  description = "Lambda function names by role (sync, webhook, worker, maintenance)."
  value       = { for key, fn in aws_lambda_function.function : key => fn.function_name }
}
