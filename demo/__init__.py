"""`make demo`: the emitter, the forwarder, Kafka and a browser, on this machine, in one command."""
