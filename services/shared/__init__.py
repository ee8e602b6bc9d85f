"""What the services share: logging, how servers run, the aiohttp mode service, the status pages and their templates."""
