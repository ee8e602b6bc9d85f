"""The Faust app of a regional node and its agents: thin loops that wire pure logic to connectors."""
