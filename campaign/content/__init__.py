"""What an email says: templates rendered in the Jinja sandbox, the plain-text part, the
MIME message, and the fast render path for templates that only print their values.

May import `campaign.domain` and the leaves; never storage, delivery or the network."""
