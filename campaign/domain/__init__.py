"""The rules of a drip campaign, pure: the plan and how it is read, schedule maths, signed
tokens, addresses, VERP return paths, the Transport protocol.

Imports only `campaign.errors`, `campaign.clock` and the standard library (plus pydantic and
YAML for the plan): no SQLAlchemy, smtplib or Jinja2, no I/O beyond reading the plan file."""
