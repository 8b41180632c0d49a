"""`python -m campaign` is the `campaign` command."""

from campaign.interfaces.cli import main

main()
