"""The console's pages, one module each, found by name: a module here that does not start with
an underscore is a page (see campaign.interfaces.console for what it exposes)."""
