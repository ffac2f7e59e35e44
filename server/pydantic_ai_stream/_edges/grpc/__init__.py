"""The gRPC edge: the servicer (translation only), the server process, the proto mapping, the client."""
