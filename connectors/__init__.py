"""One module per outside system (Kafka, object store, origin HTTP); each turns vendor errors into ours."""
