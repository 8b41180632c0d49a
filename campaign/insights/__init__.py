"""Numbers about the campaign: stats and health, Prometheus metrics, the HTML report, and
the simulation of what a subscriber would receive, the delivery log by pages.

May import storage, content and domain; changes nothing."""
