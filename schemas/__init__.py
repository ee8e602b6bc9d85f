"""The event contract: Avro schemas, single-object codec, signatures, Composer documents.

Pure: this package does no IO beyond reading its own ``.avsc`` files and imports
nothing else of fairstream's.
"""
