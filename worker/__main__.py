"""``python -m worker``: one worker process, configured from the environment."""

from tagstream.commands.worker import main

main()
