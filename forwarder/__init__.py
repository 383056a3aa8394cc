"""The sidecar that delivers OpenAlgo events to Kafka and Socket.IO."""
