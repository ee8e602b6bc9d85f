"""Infrastructure: the embedded dev stack (``devstack``) and the production manifests."""
