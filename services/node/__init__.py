"""The regional node's services: its HTTP app, dist proxy, nginx front, frontend, settings and catch-up display."""
