"""Bounces and complaints that mail providers (Amazon SES through SNS, Postmark, Mailgun,
SendGrid) post as webhooks: each provider's module checks the request is really from it and
turns its payload into `ProviderEvent`s; `record` applies them with the same suppression rules
as `bounces ingest`, once each, and only when they are about an email we sent."""
