"""Subscribers and their consent: signup, confirmation, unsubscribe, suppressions, privacy
requests, bounce and complaint reports, clicks, CSV import, plan identity, the JSON API's keys.

May import storage, content and domain; talks to mail only through `domain.transport`."""
