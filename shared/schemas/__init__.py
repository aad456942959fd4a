"""Message schemas: inbound events, outbound send requests, and the bus envelopes."""
