"""Sending: the scheduler, sender processes, one pass (claims feed, outcomes, back-off),
pacing, the SMTP transport, the dev outbox and the confirmation sender.

May import people, insights, storage, content and domain. `smtplib` lives only in `smtp`."""
