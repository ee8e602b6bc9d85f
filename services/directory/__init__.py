"""The directory and the meta-directory: the registry of nodes and the choice of node, their HTTP apps and command."""
