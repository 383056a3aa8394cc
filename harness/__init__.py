"""The real parts the tests, the demo and the benchmarks run: processes, broker, relay, forwarder.

Not shipped: the wheel holds `emitter` and `forwarder` only.
"""
