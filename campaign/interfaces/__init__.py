"""What drives the engine: the `campaign` CLI, the public web pages, the operators' admin
listener with the JSON API (api/), and the marketers' studio.

May import `campaign.engine` and the use cases below it; never `campaign.storage` directly."""
