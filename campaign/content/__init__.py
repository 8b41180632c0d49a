"""What an email says: templates rendered in the Jinja sandbox, the plain-text part, the
MIME message; each step renders through one `StepRenderer`, the full Jinja path
(`step_render`) or the fast skeleton path (`skeleton_render`), chosen in `render.Renderer`.

May import `campaign.domain` and the leaves; never storage, delivery or the network."""
