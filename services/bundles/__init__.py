"""Signed bundles: the federation's log and zips carried into a network with no Kafka link."""
