"""`twamp-nf demo`: two function instances on loopback, configured over NETCONF, measuring each other."""
