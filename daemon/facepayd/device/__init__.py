"""The peripheral: transports below, the bridge protocol client above them."""
