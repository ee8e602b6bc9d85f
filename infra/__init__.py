"""Infrastructure: the embedded dev stack (``devstack``), the dev tooling (``devtools``) and the production manifests."""
