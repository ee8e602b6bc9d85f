"""Publishing: building and producing signed releases, trust roots, the publishing service, its client and commands."""
